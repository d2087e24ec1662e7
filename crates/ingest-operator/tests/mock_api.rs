//! The I/O shell against a scripted API server (tower-test mock service, in the style of kube-rs controller-rs's
//! `ApiServerVerifier`): every request the reconcile sends is answered from a small in-memory cluster and
//! recorded, and the tests assert on the exact sequence and bodies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::{Request, Response};
use ingest_api::{IngestJob, Phase, Totals};
use ingest_operator::Category;
use ingest_operator::metrics::Metrics;
use ingest_operator::reconcile::{Context, error_policy, reconcile};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

/// What the fake API server holds.
#[derive(Clone, Default)]
struct Cluster {
    ij: Option<IngestJob>,
    jobs: Vec<Job>,
    pods: Vec<Pod>,
    plans: Vec<PartialObjectMeta<ConfigMap>>,
    /// Names of PersistentVolumes the label selector finds.
    volumes: Vec<String>,
    /// (method, path fragment, status code) answered with an error instead.
    fail: Vec<(&'static str, &'static str, u16)>,
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

impl Call {
    /// `METHOD resource` with the resource being the last plural path segment before a name, e.g. `POST jobs`.
    fn short(&self) -> String {
        let path = self.path.split('?').next().unwrap();
        let segs: Vec<&str> = path.split('/').collect();
        let kinds = [
            "jobs",
            "pods",
            "configmaps",
            "serviceaccounts",
            "roles",
            "rolebindings",
            "ingestjobs",
            "events",
            "persistentvolumes",
            "persistentvolumeclaims",
            "leases",
        ];
        let kind = segs
            .iter()
            .rev()
            .find(|s| kinds.contains(s))
            .unwrap_or(&"?");
        let status = if path.ends_with("/status") {
            "/status"
        } else {
            ""
        };
        format!("{} {kind}{status}", self.method)
    }
}

fn to_vals<T: serde::Serialize>(v: &[T]) -> Vec<Value> {
    v.iter().map(|o| serde_json::to_value(o).unwrap()).collect()
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    cluster: Cluster,
    calls: Arc<Mutex<Vec<Call>>>,
) {
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().to_string();
        let path = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let call = Call {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        };
        let short = call.short();
        calls.lock().unwrap().push(call);
        let injected = cluster
            .fail
            .iter()
            .find(|(m, frag, _)| *m == method && short.ends_with(frag));
        let (code, resp) = if let Some((_, _, code)) = injected {
            (
                *code,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "injected", "reason": "x", "code": code}),
            )
        } else {
            match short.as_str() {
                "GET jobs" => (200, list("JobList", to_vals(&cluster.jobs))),
                "GET pods" => (200, list("PodList", to_vals(&cluster.pods))),
                "GET configmaps" => {
                    let items: Vec<Value> = cluster.plans.iter().map(|m| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m.metadata})).collect();
                    (
                        200,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
                    )
                }
                "PATCH ingestjobs/status" => {
                    let mut ij = serde_json::to_value(cluster.ij.as_ref().unwrap()).unwrap();
                    ij["status"] = body["status"].clone();
                    (200, ij)
                }
                "PATCH ingestjobs" => (
                    200,
                    serde_json::to_value(cluster.ij.as_ref().unwrap()).unwrap(),
                ),
                "GET persistentvolumes" => {
                    let items: Vec<Value> = cluster
                        .volumes
                        .iter()
                        .map(|n| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": n}}))
                        .collect();
                    (
                        200,
                        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
                    )
                }
                "DELETE jobs" | "DELETE configmaps" | "DELETE persistentvolumes" => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                ),
                s if s.starts_with("POST") => (201, body),
                _ => (200, body),
            }
        };
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&resp).unwrap()))
                .unwrap(),
        );
    }
}

/// Runs one reconcile of `ij` against `cluster`; returns its result, the calls, and the context (for a
/// second reconcile sharing rate-limit memory, pass it back via `ctx`).
async fn run(
    ij: &IngestJob,
    cluster: Cluster,
) -> (
    Result<Action, ingest_operator::Error>,
    Vec<Call>,
    Arc<Metrics>,
) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(
        handle,
        Cluster {
            ij: Some(ij.clone()),
            ..cluster
        },
        calls.clone(),
    ));
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context::new(
        Client::new(svc, "default"),
        settings(),
        metrics.clone(),
        None,
        Duration::from_secs(5),
    ));
    let result = reconcile(Arc::new(ij.clone()), ctx.clone()).await;
    if let Err(e) = &result {
        error_policy(Arc::new(ij.clone()), e, ctx.clone());
    }
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("fake API server stops when the client is dropped")
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    (result, calls, metrics)
}

fn shorts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::short).collect()
}

fn status_body(calls: &[Call]) -> &Value {
    &calls
        .iter()
        .find(|c| c.short() == "PATCH ingestjobs/status")
        .expect("a status write")
        .body["status"]
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap()
}

fn totals() -> Totals {
    Totals {
        files: 100,
        directories: 3,
        bytes: 1000,
    }
}

#[tokio::test]
async fn create_applies_identity_creates_the_scan_job_and_reports_pending() {
    let ij = fixture("one-ip.yaml");
    let (result, calls, metrics) = run(&ij, Cluster::default()).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(60)));
    assert_eq!(
        shorts(&calls),
        [
            "GET jobs",
            "GET pods",
            "GET configmaps",
            "PATCH serviceaccounts",
            "PATCH roles",
            "PATCH rolebindings",
            "POST jobs",
            "PATCH ingestjobs/status"
        ]
    );
    assert!(
        calls[0]
            .path
            .contains("labelSelector=ingest.vfxt.dev%2Fjob%3Dgenomics"),
        "{}",
        calls[0].path
    );
    assert!(
        calls[3].path.contains("fieldManager=vfxt-ingest") && calls[3].path.contains("force=true"),
        "server-side apply: {}",
        calls[3].path
    );
    assert_eq!(calls[6].body["metadata"]["name"], "genomics-r0-scan");
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Pending");
    assert_eq!(condition(st, "Reconciling")["status"], "True");
    assert_eq!(st["observedGeneration"], 1);
    assert!(
        metrics
            .render()
            .contains("vfxt_ingest_status_writes_total 1")
    );
}

#[tokio::test]
async fn restart_mid_copy_creates_nothing_twice_and_reports_progress() {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, false, false, "", "", 2)
    });
    obs.pods
        .push(worker_pod(&ij, "copy", 1, 0, 5, progress(30, 300), None));
    let cluster = Cluster {
        jobs: obs.jobs,
        pods: obs.pods,
        plans: obs.plans,
        ..Default::default()
    };
    let (result, calls, _) = run(&ij, cluster).await;
    result.unwrap();
    assert!(
        !shorts(&calls).contains(&"POST jobs".to_owned()),
        "existing Jobs are not created again: {:?}",
        shorts(&calls)
    );
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Copying");
    assert_eq!(
        (
            st["progress"]["files"].as_u64(),
            st["progress"]["bytes"].as_u64()
        ),
        (Some(30), Some(300))
    );
    assert_eq!(st["servers"][1]["files"], 30);
    assert_eq!(st["totals"]["files"], 100);
}

#[tokio::test]
async fn scan_done_creates_one_copy_job_per_server() {
    let ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 6, totals(), false);
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            plans: obs.plans,
            ..Default::default()
        },
    )
    .await;
    result.unwrap();
    let created: Vec<String> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        created,
        ["media-r0-copy-0", "media-r0-copy-1", "media-r0-copy-2"]
    );
    assert_eq!(status_body(&calls)["phase"], "Copying");
}

#[tokio::test]
async fn verify_none_still_runs_the_last_phase_to_set_directory_times() {
    // Shards write into directories other shards own: their times are final only after
    // every copy, so the verify role runs (and only sets metadata) even with mode None.
    let mut ij = fixture("one-ip.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut obs = scanned(&ij, 8, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0-7", "", 0)
    });
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            plans: obs.plans,
            ..Default::default()
        },
    )
    .await;
    result.unwrap();
    let created: Vec<String> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, ["genomics-r0-verify-0"]);
    let verify_job = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    let cmd = verify_job.body["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(cmd.contains("\"--verify\",\"none\""), "{cmd}");
    let st = status_body(&calls);
    assert!(st["verification"].is_null(), "{st}");
}

#[tokio::test]
async fn completion_marks_ready_and_stops_requeueing() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut obs = scanned(&ij, 8, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0-7", "", 0)
    });
    add_role_jobs(&ij, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0-7", "", 0)
    });
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            plans: obs.plans,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Succeeded");
    assert_eq!(condition(st, "Ready")["status"], "True");
    assert_eq!(st["shards"]["succeeded"], 8);
    assert!(st["completionTime"].is_string());
}

#[tokio::test]
async fn failed_scan_reports_failed_and_stalled() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 0, totals(), true);
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    let st = status_body(&calls);
    assert_eq!(st["phase"], Phase::Failed.as_str());
    assert_eq!(condition(st, "Stalled")["reason"], "ScanFailed");
}

#[tokio::test]
async fn invalid_spec_writes_stalled_status_only_and_does_not_requeue() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.destination.nfs.servers = vec!["10.1.1.1".into(), "10.1.1.1".into()];
    let (result, calls, metrics) = run(&ij, Cluster::default()).await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Invalid);
    assert!(
        err.to_string().contains("spec.destination.nfs.servers"),
        "{err}"
    );
    assert_eq!(
        shorts(&calls),
        ["PATCH ingestjobs/status"],
        "no children for an invalid spec"
    );
    let st = status_body(&calls);
    assert_eq!(condition(st, "Stalled")["reason"], "InvalidSpec");
    assert!(st["message"].as_str().unwrap().contains("listed twice"));
    assert!(
        metrics
            .render()
            .contains("vfxt_ingest_reconcile_errors_total{category=\"invalid\"} 1")
    );
}

#[tokio::test]
async fn api_errors_surface_with_their_category_and_conflicts_on_create_are_tolerated() {
    let ij = fixture("one-ip.yaml");
    let (result, _, metrics) = run(
        &ij,
        Cluster {
            fail: vec![("POST", "jobs", 500)],
            ..Default::default()
        },
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Api);
    assert!(
        err.to_string().contains("create Job genomics-r0-scan"),
        "{err}"
    );
    assert!(
        metrics
            .render()
            .contains("vfxt_ingest_reconcile_errors_total{category=\"api\"} 1")
    );

    let (result, calls, _) = run(
        &ij,
        Cluster {
            fail: vec![("POST", "jobs", 409)],
            ..Default::default()
        },
    )
    .await;
    result.expect("409 on create means the Job exists");
    assert_eq!(shorts(&calls).last().unwrap(), "PATCH ingestjobs/status");

    let (result, _, _) = run(
        &ij,
        Cluster {
            fail: vec![("GET", "pods", 429)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.unwrap_err().category(), Category::Throttled);
}

#[tokio::test]
async fn a_new_run_prunes_the_previous_runs_children() {
    let ij0 = fixture("one-ip.yaml");
    let obs = scanned(&ij0, 8, totals(), false);
    let mut ij = ij0.clone();
    ij.spec.run = 1;
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            plans: obs.plans,
            ..Default::default()
        },
    )
    .await;
    result.unwrap();
    let s = shorts(&calls);
    assert!(s.contains(&"POST jobs".to_owned()));
    let deleted: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.split('?').next().unwrap())
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    assert!(
        deleted[0].ends_with("/jobs/genomics-r0-scan")
            && deleted[1].ends_with("/configmaps/genomics-r0-plan-0"),
        "{deleted:?}"
    );
    let created = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    assert_eq!(created.body["metadata"]["name"], "genomics-r1-scan");
    assert_eq!(status_body(&calls)["run"], 1);
}

#[tokio::test]
async fn status_writes_are_rate_limited_within_one_context() {
    // Two reconciles 0 s apart sharing a context: the second has only counter changes and must not write.
    let ij = fixture("one-ip.yaml");
    let mut obs = scanned(&ij, 8, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, false, false, "", "", 2)
    });
    obs.pods
        .push(worker_pod(&ij, "copy", 0, 0, 5, progress(1, 1), None));

    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let first_cluster = Cluster {
        ij: Some(ij.clone()),
        jobs: obs.jobs.clone(),
        pods: obs.pods.clone(),
        plans: obs.plans.clone(),
        ..Default::default()
    };
    let ctx = Arc::new(Context::new(
        Client::new(svc, "default"),
        settings(),
        Arc::new(Metrics::default()),
        None,
        Duration::from_secs(5),
    ));
    let server = tokio::spawn(serve(handle, first_cluster, calls.clone()));
    reconcile(Arc::new(ij.clone()), ctx.clone()).await.unwrap();
    let written: ingest_api::IngestJobStatus =
        serde_json::from_value(status_body(&calls.lock().unwrap()).clone()).unwrap();
    // The watch delivers the written status; pods moved on meanwhile (the fake server still reports 1 file,
    // so change the object we pass instead: an older status makes the new one differ only in counters).
    let mut seen = ij.clone();
    let mut older = written.clone();
    older.progress.as_mut().unwrap().files = 0;
    seen.status = Some(older);
    let action = reconcile(Arc::new(seen), ctx.clone()).await.unwrap();
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    let writes = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.short() == "PATCH ingestjobs/status")
        .count();
    assert_eq!(
        writes, 1,
        "the second status differs only in counters and waits for the interval"
    );
    assert_ne!(
        action,
        Action::requeue(Duration::from_secs(60)),
        "a postponed write requeues within the interval"
    );
}

#[tokio::test]
async fn mount_options_add_a_finalizer_before_anything_else() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.destination.nfs.mount_options = Some(vec!["hard".into()]);
    let (result, calls, _) = run(&ij, Cluster::default()).await;
    assert_eq!(
        result.unwrap(),
        Action::await_change(),
        "the finalizer patch triggers the next reconcile"
    );
    assert_eq!(shorts(&calls), ["PATCH ingestjobs"]);
    assert_eq!(
        calls[0].body[1]["value"],
        json!(["ingest.vfxt.dev/volumes"]),
        "{}",
        calls[0].body
    );
}

#[tokio::test]
async fn deleting_a_job_with_volumes_deletes_its_volumes_then_the_finalizer() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.destination.nfs.mount_options = Some(vec!["hard".into()]);
    ij.metadata.finalizers = Some(vec![ingest_operator::reconcile::FINALIZER.into()]);
    ij.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(50)));
    let volumes = vec![
        "ingest-media-dst-0".to_owned(),
        "ingest-media-dst-1".to_owned(),
    ];
    let (result, calls, _) = run(
        &ij,
        Cluster {
            volumes,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        shorts(&calls),
        [
            "GET persistentvolumes",
            "DELETE persistentvolumes",
            "DELETE persistentvolumes",
            "PATCH ingestjobs"
        ]
    );
    assert!(
        calls[0].path.contains(
            "labelSelector=ingest.vfxt.dev%2Fjob%3Dmedia%2Cingest.vfxt.dev%2Fnamespace%3Dingest"
        ),
        "{}",
        calls[0].path
    );
    assert!(
        calls[2]
            .path
            .starts_with("/api/v1/persistentvolumes/ingest-media-dst-1?"),
        "{}",
        calls[2].path
    );
    assert_eq!(
        calls[3].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
}
