//! The I/O shell against a scripted API server (tower-test mock service, in the style of kube-rs controller-rs's
//! `ApiServerVerifier`): every request the reconcile sends is answered from a small in-memory cluster and
//! recorded, and the tests assert on the exact sequence and bodies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::selectors;
use common::*;
use http::{Request, Response};
use ingest_api::claims::{ClaimResponse, PassCheckpoint, PassState, RunCheckpoint, ShardDone};
use ingest_api::policy::AdmissionPolicy;
use ingest_api::report::PodResult;
use ingest_api::{IngestJob, IngestJobStatus, Phase, Totals};
use ingest_operator::Category;
use ingest_operator::claims::{Refusal, Registry};
use ingest_operator::desired::Settings;
use ingest_operator::metrics::Metrics;
use ingest_operator::observe::Caches;
use ingest_operator::reconcile::{Context, error_policy, reconcile};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// What the fake API server holds. Lists honour the namespace in the path and the label and field selectors
/// as the API server does (`common::selectors`); creates and deletes change what later lists return.
#[derive(Clone, Default)]
struct Cluster {
    /// Not the API server's: the operator's claims registry (what its endpoint serves the worker
    /// pods). Every reconcile of one test uses it, as one operator process would; a test replaces
    /// it to restart the operator.
    claims: Arc<Registry>,
    /// The IngestJob a single-job test reconciles (added to `ijs` by [`run`]).
    ij: Option<IngestJob>,
    /// Every IngestJob; status writes land here.
    ijs: Vec<IngestJob>,
    jobs: Vec<Job>,
    pods: Vec<Pod>,
    plans: Vec<PartialObjectMeta<ConfigMap>>,
    /// Names of PersistentVolumes the label selector finds.
    volumes: Vec<String>,
    /// (method, path fragment, status code) answered with an error instead.
    fail: Vec<(&'static str, &'static str, u16)>,
    /// How many matching calls `fail` answers (None: every one); then they are served.
    fail_times: Option<usize>,
    /// Not the API server's: the operator's watch caches, when a test fixes what they hold (a cache
    /// lagging the cluster). None: as the watches fill them from this cluster ([`watched`]).
    caches: Option<Caches>,
    /// Not the API server's: the operator's admin policy (`--policy`). None: [`settings`]'.
    policy: Option<AdmissionPolicy>,
}

/// The operator's watch caches as its watches (every namespace, by the managed-by label) fill them from
/// `c` once they have listed: what a reconcile reads its children from instead of listing them.
fn watched(c: &Cluster) -> Caches {
    fn managed<K: kube::Resource + Clone>(items: &[K]) -> Vec<K> {
        let sel = ingest_operator::apply::managed_selector();
        items
            .iter()
            .filter(|o| selectors::labels_match(Some(&sel), o.labels()))
            .cloned()
            .collect()
    }
    Caches::listed(managed(&c.jobs), managed(&c.pods), managed(&c.plans))
}

type Shared = Arc<Mutex<Cluster>>;

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
        let kind = segs
            .iter()
            .rev()
            .find(|s| KINDS.contains(s))
            .unwrap_or(&"?");
        let status = if path.ends_with("/status") {
            "/status"
        } else {
            ""
        };
        format!("{} {kind}{status}", self.method)
    }

    /// The object name in the path (the segment after the resource), if any.
    fn name(&self) -> Option<String> {
        let path = self.path.split('?').next().unwrap();
        let segs: Vec<&str> = path.split('/').collect();
        let i = segs.iter().rposition(|s| KINDS.contains(s))?;
        segs.get(i + 1).map(|s| s.to_string())
    }
}

const KINDS: [&str; 11] = [
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

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn listed_vals<T: serde::Serialize>(path: &str, v: &[T]) -> Vec<Value> {
    v.iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .filter(|o| selectors::listed(path, o))
        .collect()
}

fn status_error(code: u16, message: &str) -> Value {
    // The reason as the API server gives it where a client reads it (`get_opt` tells a 404 by it).
    let reason = if code == 404 { "NotFound" } else { "x" };
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn answer(c: &mut Cluster, call: &Call) -> (u16, Value) {
    let (path, body, short) = (&call.path, &call.body, call.short());
    let name = call.name().unwrap_or_default();
    let named = |n: Option<&str>| n == Some(name.as_str());
    match short.as_str() {
        "GET jobs" => (200, list("JobList", listed_vals(path, &c.jobs))),
        "GET pods" => (200, list("PodList", listed_vals(path, &c.pods))),
        "GET configmaps" if !name.is_empty() => {
            // One plan's metadata (`get_metadata_opt`), as the API server answers it.
            match c.plans.iter().find(|m| {
                named(m.metadata.name.as_deref())
                    && selectors::listed(path, &serde_json::to_value(m).unwrap())
            }) {
                Some(m) => (
                    200,
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m.metadata}),
                ),
                None => (404, status_error(404, "configmaps not found")),
            }
        }
        "GET configmaps" => {
            let items: Vec<Value> = listed_vals(path, &c.plans)
                .into_iter()
                .map(|m| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": m["metadata"]}))
                .collect();
            (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
            )
        }
        "GET ingestjobs" if !name.is_empty() => {
            match c.ijs.iter().find(|i| named(i.metadata.name.as_deref())) {
                Some(ij) => (200, serde_json::to_value(ij).unwrap()),
                None => (404, status_error(404, "ingestjobs not found")),
            }
        }
        "PATCH ingestjobs/status" => {
            let Some(ij) = c.ijs.iter_mut().find(|i| named(i.metadata.name.as_deref())) else {
                return (404, status_error(404, "ingestjob not found"));
            };
            // metadata.resourceVersion in a patch is a precondition, as on the API server.
            let stored = ij.metadata.resource_version.clone();
            if let (Some(want), Some(have)) =
                (body["metadata"]["resourceVersion"].as_str(), &stored)
                && want != have
            {
                return (
                    409,
                    status_error(
                        409,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            ij.status = serde_json::from_value(body["status"].clone()).unwrap();
            ij.metadata.resource_version =
                stored.map(|v| (v.parse::<u64>().unwrap() + 1).to_string());
            (200, serde_json::to_value(&*ij).unwrap())
        }
        "PATCH configmaps" => {
            // Server-side apply of a plan chunk: stored (metadata; what the watch caches hold).
            let m: PartialObjectMeta<ConfigMap> =
                serde_json::from_value(json!({"metadata": body["metadata"]})).unwrap();
            c.plans.retain(|o| !named(o.metadata.name.as_deref()));
            c.plans.push(m);
            (200, body.clone())
        }
        "PATCH ingestjobs" => match c.ijs.iter().find(|i| named(i.metadata.name.as_deref())) {
            Some(ij) => (200, serde_json::to_value(ij).unwrap()),
            None => (404, status_error(404, "ingestjob not found")),
        },
        "GET persistentvolumes" => {
            let items: Vec<Value> = c
                .volumes
                .iter()
                .map(|n| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": n}}))
                .collect();
            (
                200,
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
            )
        }
        "PATCH jobs" => match c
            .jobs
            .iter_mut()
            .find(|j| named(j.metadata.name.as_deref()))
        {
            Some(j) => {
                if let Some(sus) = body["spec"]["suspend"].as_bool() {
                    j.spec.get_or_insert_default().suspend = Some(sus);
                }
                (200, serde_json::to_value(&*j).unwrap())
            }
            None => (404, status_error(404, "not found")),
        },
        "POST jobs" => {
            let job: Job = serde_json::from_value(body.clone()).unwrap();
            if c.jobs.iter().any(|j| j.metadata.name == job.metadata.name) {
                return (409, status_error(409, "already exists"));
            }
            c.jobs.push(job);
            (201, body.clone())
        }
        "DELETE jobs" | "DELETE configmaps" | "DELETE pods" => {
            let before = c.jobs.len() + c.plans.len() + c.pods.len();
            c.jobs.retain(|o| !named(o.metadata.name.as_deref()));
            c.plans.retain(|o| !named(o.metadata.name.as_deref()));
            c.pods.retain(|o| !named(o.metadata.name.as_deref()));
            if before == c.jobs.len() + c.plans.len() + c.pods.len() {
                (404, status_error(404, "not found"))
            } else {
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                )
            }
        }
        "DELETE persistentvolumes" => (
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        ),
        s if s.starts_with("POST") => (201, body.clone()),
        _ => (200, body.clone()),
    }
}

async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    cluster: Shared,
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
        calls.lock().unwrap().push(call.clone());
        let mut c = cluster.lock().unwrap();
        let injected = c
            .fail
            .iter()
            .find(|(m, frag, _)| *m == method && short.ends_with(frag))
            .map(|(_, _, code)| *code)
            .filter(|_| c.fail_times != Some(0));
        if injected.is_some() {
            c.fail_times = c.fail_times.map(|n| n - 1);
        }
        let (code, resp) = match injected {
            Some(code) => (code, status_error(code, "injected")),
            None => answer(&mut c, &call),
        };
        drop(c);
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&resp).unwrap()))
                .unwrap(),
        );
    }
}

/// Runs one reconcile of `ij` against `cluster`; returns its result, the calls, and the metrics.
async fn run(
    ij: &IngestJob,
    cluster: Cluster,
) -> (
    Result<Action, ingest_operator::Error>,
    Vec<Call>,
    Arc<Metrics>,
) {
    let mut cluster = cluster;
    cluster.ij = Some(ij.clone());
    cluster.ijs.push(ij.clone());
    let shared = Arc::new(Mutex::new(cluster));
    run_in(&shared, ij).await
}

/// One reconcile of `ij` against a cluster that persists between calls (what later reconciles see is what
/// this one left: created Jobs, deleted ConfigMaps, written status).
async fn run_in(
    shared: &Shared,
    ij: &IngestJob,
) -> (
    Result<Action, ingest_operator::Error>,
    Vec<Call>,
    Arc<Metrics>,
) {
    run_in_with(shared, ij, false).await
}

/// [`run_in`], with an Event recorder when `events` (its Events are `POST events` calls).
async fn run_in_with(
    shared: &Shared,
    ij: &IngestJob,
    events: bool,
) -> (
    Result<Action, ingest_operator::Error>,
    Vec<Call>,
    Arc<Metrics>,
) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(handle, shared.clone(), calls.clone()));
    let metrics = Arc::new(Metrics::default());
    let client = Client::new(svc, "default");
    let recorder = events.then(|| {
        kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "vfxt-ingest".into(),
                instance: None,
            },
        )
    });
    let (claims, caches, policy) = {
        let c = shared.lock().unwrap();
        (
            c.claims.clone(),
            c.caches.clone().unwrap_or_else(|| watched(&c)),
            c.policy.clone().unwrap_or_else(|| settings().policy),
        )
    };
    let ctx = Arc::new(
        Context::new(
            client,
            Settings {
                policy,
                ..settings()
            },
            metrics.clone(),
            recorder,
            Duration::from_secs(5),
        )
        .with_claims(claims)
        .with_caches(None, caches),
    );
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

/// The IngestJob `name` as the cluster holds it now (with the status the last reconcile wrote), as the
/// controller's watch would deliver it.
fn current(shared: &Shared, name: &str) -> IngestJob {
    shared
        .lock()
        .unwrap()
        .ijs
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(name))
        .cloned()
        .unwrap()
}

fn shorts(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::short).collect()
}

/// The writes of the children's tiers (see `Child::tier`): each tier's are sent at once.
const TIERS: [&[&str]; 2] = [
    &[
        "PATCH serviceaccounts",
        "PATCH persistentvolumes",
        "PATCH persistentvolumeclaims",
    ],
    &["POST jobs"],
];

/// `calls` with each leading run of one tier's writes sorted, tier after tier: they are sent at
/// once, so their order is the scheduler's, not the operator's. A write of a tier before the one
/// it follows stays where it is, and fails the comparison.
fn tiered(mut calls: Vec<String>) -> Vec<String> {
    let mut at = 0;
    for tier in TIERS {
        let n = calls[at..]
            .iter()
            .take_while(|c| tier.contains(&c.as_str()))
            .count();
        calls[at..at + n].sort();
        at += n;
    }
    calls
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
        ..Default::default()
    }
}

#[tokio::test]
async fn create_applies_identity_creates_the_scan_job_and_reports_pending() {
    let ij = fixture("one-ip.yaml");
    let (result, calls, metrics) = run(&ij, Cluster::default()).await;
    // Half the default stall timeout: a stall shows even when no pod event comes.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));
    // Nothing is listed: the children are read from the operator's watch caches.
    assert_eq!(
        tiered(shorts(&calls)),
        [
            "PATCH serviceaccounts",
            "POST jobs",
            "PATCH ingestjobs/status"
        ]
    );
    let patches: Vec<&Call> = calls[..2].iter().filter(|c| c.method == "PATCH").collect();
    assert!(
        patches.len() == 1
            && patches
                .iter()
                .all(|c| c.path.contains("fieldManager=vfxt-ingest")
                    && c.path.contains("force=true")),
        "server-side apply: {:?}",
        patches.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    let job = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    assert_eq!(job.body["metadata"]["name"], "genomics-r0-scan");
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
async fn restart_mid_copy_resumes_the_pass_from_the_checkpoint_creates_nothing_twice_and_reports_progress()
 {
    // The operator restarted mid-copy: its registry is empty; the status holds the copy pass's
    // checkpoint (shards 0-2 completed).
    let mut ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 6)
    });
    obs.pods
        .push(worker_pod(&ij, "copy", 1, "abcde", "Running"));
    ij.status = Some(IngestJobStatus {
        run: Some(0),
        phase: Some(Phase::Copying),
        checkpoint: Some(RunCheckpoint {
            copy: Some(PassCheckpoint {
                completed: "0-2".into(),
                files: 30,
                bytes: 300,
                ..Default::default()
            }),
            verify: None,
            prune: None,
        }),
        ..Default::default()
    });
    let mut c = Cluster::default();
    add(&mut c, obs);
    c.ijs = vec![ij.clone()];
    let shared: Shared = Arc::new(Mutex::new(c));
    let (result, calls, _) = run_in(&shared, &ij).await;
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
    assert_eq!(
        (&st["shards"]["succeeded"], &st["shards"]["pending"]),
        (&json!(3), &json!(3))
    );
    assert_eq!(st["checkpoint"]["copy"]["completed"], "0-2");
    assert_eq!(st["servers"].as_array().unwrap().len(), 3);
    assert_eq!(st["servers"][1]["workers"], 6);
    assert_eq!(st["totals"]["files"], 100);

    // The running worker reports to the new operator: it keeps shard 3 (no one else gets it).
    let claims = shared.lock().unwrap().claims.clone();
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 1, "abcde"));
    r.holding = vec![3];
    r.progress = progress(5, 50);
    assert_eq!(
        claims.handle(r).unwrap(),
        ClaimResponse {
            shards: vec![],
            state: PassState::Work,
            avoid: vec![],
            deletes: Default::default(),
            limits: None,
            closed: false,
        }
    );
    let ij = current(&shared, "media");
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    let st = status_body(&calls);
    assert_eq!(
        (
            st["progress"]["files"].as_u64(),
            st["progress"]["bytes"].as_u64()
        ),
        (Some(35), Some(350))
    );
    assert_eq!(
        (
            &st["shards"]["succeeded"],
            &st["shards"]["running"],
            &st["shards"]["pending"]
        ),
        (&json!(3), &json!(1), &json!(2))
    );
}

#[tokio::test]
async fn scan_done_creates_one_copy_job_whose_workers_mount_every_server_and_sets_up_its_pass() {
    let ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 6, totals(), false);
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        jobs: obs.jobs,
        plans: obs.plans,
        ..Default::default()
    }));
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    let created: Vec<&Value> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| &c.body)
        .collect();
    assert_eq!(created.len(), 1);
    let job = created[0];
    assert_eq!(job["metadata"]["name"], "media-r0-copy");
    assert_eq!(
        (
            &job["spec"]["completionMode"],
            &job["spec"]["completions"],
            &job["spec"]["parallelism"]
        ),
        (&json!("Indexed"), &json!(6), &json!(6))
    );
    let pod = &job["spec"]["template"]["spec"];
    let servers: Vec<(&str, &str)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("dest-"))
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["nfs"]["server"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            ("dest-0", "10.1.1.101"),
            ("dest-1", "10.1.1.102"),
            ("dest-2", "10.1.1.103")
        ]
    );
    let args = pod["containers"][0]["args"].to_string();
    assert!(
        args.contains(&format!("\"--claims-url\",\"{}\"", settings().claims_url)),
        "{args}"
    );
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Copying");
    assert_eq!(
        (&st["shards"]["total"], &st["shards"]["pending"]),
        (&json!(6), &json!(6))
    );

    // The pass its workers claim from exists: the first worker to ask gets shards.
    let claims = shared.lock().unwrap().claims.clone();
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, "x"));
    r.room = 2;
    assert_eq!(claims.handle(r).unwrap().shards, vec![0, 1]);
}

#[tokio::test]
async fn report_claim_reaches_the_created_copy_job_and_the_status_says_where() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.report =
        Some(serde_json::from_value(json!({"pvc": {"claimName": "ingest-reports"}})).unwrap());
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
    let created: Vec<&Value> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| &c.body)
        .collect();
    assert_eq!(created.len(), 1);
    let pod = &created[0]["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "report", "persistentVolumeClaim": {"claimName": "ingest-reports", "readOnly": false}})),
        "{volumes:?}"
    );
    let c = &pod["containers"][0];
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "report", "mountPath": "/ingest/report"})),
        "{}",
        c["volumeMounts"]
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--report")
        .expect("--report");
    assert_eq!(
        args[at + 1],
        "/ingest/report/media/run-0/copy-$(JOB_COMPLETION_INDEX).jsonl.gz"
    );
    assert_eq!(
        status_body(&calls)["report"],
        json!({"location": "pvc ingest-reports:/media/run-0/"})
    );
}

#[tokio::test]
async fn verify_none_still_runs_the_last_phase_to_set_directory_times() {
    // Shards write into directories other shards own: their times are final only after
    // every copy, so the verify role runs (and only sets metadata) even with mode None.
    let mut ij = fixture("one-ip.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut obs = scanned(&ij, 8, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "0-1", "", 0)
    });
    let c = Cluster {
        jobs: obs.jobs,
        plans: obs.plans,
        ..Default::default()
    };
    drive(
        &c.claims,
        &ij,
        "copy",
        8,
        &PassScript::all_done(8, result(1, 10, 0)),
    );
    let claims = c.claims.clone();
    let (result, calls, _) = run(&ij, c).await;
    result.unwrap();
    let created: Vec<String> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, ["genomics-r0-verify"]);
    let verify_job = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    let cmd = verify_job.body["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(cmd.contains("\"--verify\",\"none\""), "{cmd}");
    assert!(cmd.contains("\"--phase\",\"verify\""), "{cmd}");
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Verifying");
    assert!(st["verification"].is_null(), "{st}");
    // Its workers find their pass.
    let mut r = claim_request(&ij, "verify", &worker_pod_name(&ij, "verify", 0, "x"));
    r.room = 1;
    assert_eq!(claims.handle(r).unwrap().shards, vec![0]);
}

#[tokio::test]
async fn completion_marks_ready_writes_the_checkpoint_and_stops_requeueing() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut c = Cluster::default();
    add_finished(
        &mut c,
        &ij,
        8,
        PassScript::all_done(8, PodResult::default()),
    );
    let (result, calls, _) = run(&ij, c).await;
    assert_eq!(result.unwrap(), Action::await_change());
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Succeeded");
    assert_eq!(condition(st, "Ready")["status"], "True");
    assert_eq!(st["shards"]["succeeded"], 8);
    assert_eq!(st["progress"]["files"], 8);
    assert_eq!(
        st["checkpoint"],
        json!({
            "copy": {"completed": "0-7", "files": 8, "bytes": 80, "failed": 0},
            "verify": {"completed": "0-7", "files": 0, "bytes": 0, "failed": 0}
        })
    );
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
async fn a_job_the_admin_policy_denies_creates_nothing_and_says_which_rules() {
    let ij = fixture("one-ip.yaml");
    let policy = AdmissionPolicy::from_json(
        r#"{"default": {"servers": ["10.0.0.0/16"]},
            "namespaces": {"ingest": {"servers": ["10.1.0.0/16"], "maxThreadsPerWorker": 16}}}"#,
    )
    .unwrap();
    let (result, calls, metrics) = run(
        &ij,
        Cluster {
            policy: Some(policy),
            ..Default::default()
        },
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Invalid);
    assert_eq!(
        shorts(&calls),
        ["PATCH ingestjobs/status"],
        "no children for a denied job"
    );
    let st = status_body(&calls);
    assert_eq!(st["phase"], "Failed");
    let ready = condition(st, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&"False".into(), &"PolicyDenied".into())
    );
    // The namespace's own rules, not the default's: its source server is outside 10.1/16, and
    // 32 threads are over 16.
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("admin policy rule servers: 10.0.0.5 not allowed (allowed: 10.1.0.0/16)")
            && msg.contains("admin policy rule maxThreadsPerWorker: spec.threadsPerWorker is 32"),
        "{msg}"
    );
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
            fail: vec![("PATCH", "serviceaccounts", 429)],
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
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 2)
    });
    // A live worker reports 1 file so far.
    let claims = Arc::new(Registry::default());
    drive(
        &claims,
        &ij,
        "copy",
        8,
        &PassScript::default().running(&worker_pod_name(&ij, "copy", 0, "x"), &[0], progress(1, 1)),
    );

    let first_cluster = Cluster {
        ij: Some(ij.clone()),
        jobs: obs.jobs.clone(),
        pods: obs.pods.clone(),
        plans: obs.plans.clone(),
        ..Default::default()
    };
    // No reconcile throttle here: the second pass must run and decide not to write.
    let caches = watched(&first_cluster);
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        claims,
        ..first_cluster
    }));
    let (ctx, calls, server) = operator(&shared, caches);
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
        Action::requeue(Duration::from_secs(30)),
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
async fn volumes_claims_and_the_identity_are_applied_before_the_job() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.destination.nfs.mount_options = Some(vec!["hard".into()]);
    ij.metadata.finalizers = Some(vec![ingest_operator::reconcile::FINALIZER.into()]);
    // Scanned: the copy Job comes with a volume and a claim per server.
    let mut c = Cluster::default();
    add(&mut c, scanned(&ij, 6, totals(), false));
    let (result, calls, _) = run(&ij, c).await;
    result.unwrap();
    // A pod without its ServiceAccount or claims would be refused or would wait.
    assert_eq!(
        tiered(shorts(&calls)),
        [
            "PATCH persistentvolumeclaims",
            "PATCH persistentvolumeclaims",
            "PATCH persistentvolumeclaims",
            "PATCH persistentvolumes",
            "PATCH persistentvolumes",
            "PATCH persistentvolumes",
            "PATCH serviceaccounts",
            "POST jobs",
            "PATCH ingestjobs/status"
        ]
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
        "ingest.media-dst-0".to_owned(),
        "ingest.media-dst-1".to_owned(),
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
            .starts_with("/api/v1/persistentvolumes/ingest.media-dst-1?"),
        "{}",
        calls[2].path
    );
    assert_eq!(
        calls[3].body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
}

/// `ij` at its current run with every Job finished (scan, copy, verify), its plan stored, and both
/// passes over `shards` shards completed in the operator's registry (verify as `verify` says).
fn add_finished(c: &mut Cluster, ij: &IngestJob, shards: u64, verify: PassScript) {
    let mut obs = scanned(ij, shards, totals(), false);
    let done = |j: &Job| observed_job(j, true, false, "", "", 0);
    add_pass_job(ij, &mut obs, "copy", done);
    add_pass_job(ij, &mut obs, "verify", done);
    add(c, obs);
    drive(
        &c.claims,
        ij,
        "copy",
        shards,
        &PassScript::all_done(shards, result(1, 10, 0)),
    );
    drive(&c.claims, ij, "verify", shards, &verify);
}

fn add(c: &mut Cluster, obs: ingest_operator::observe::Observed) {
    c.jobs.extend(obs.jobs);
    c.pods.extend(obs.pods);
    c.plans.extend(obs.plans);
}

fn deletes(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.split('?').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_mock_evaluates_selectors_as_the_api_server_does() {
    use selectors::*;
    let l: std::collections::BTreeMap<String, String> = [("a", "1"), ("b", "x")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    for (sel, want) in [
        ("a=1", true),
        ("a==1,b=x", true),
        ("a=1,b=y", false),
        ("a!=2", true),
        ("c!=2", true),
        ("a in (1,2)", true),
        ("a in (2,3)", false),
        ("c in (1)", false),
        ("b notin (y, z)", true),
        ("c notin (1)", true),
        ("a", true),
        ("!a", false),
        ("!c", true),
        ("a,c", false),
    ] {
        assert_eq!(labels_match(Some(sel), &l), want, "{sel}");
    }
    let obj = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "1"}}, "status": {"phase": "Running"}});
    assert!(fields_match(
        Some("metadata.name=n,status.phase!=Failed"),
        &obj
    ));
    assert!(!fields_match(Some("status.phase=Failed"), &obj));
    // What kube sends: form-encoded in the query.
    let uri = "/api/v1/namespaces/ns/pods?&labelSelector=a+in+%281%2C2%29%2C%21c&fieldSelector=metadata.name%3Dn";
    assert!(listed(uri, &obj));
    assert!(!listed("/api/v1/namespaces/other/pods?", &obj));
}

#[tokio::test]
async fn two_ingestjobs_in_one_namespace_leave_each_others_plans_alone() {
    // Issue 12: a job at run 0 and one at run 2 in one namespace deleted each other's plan ConfigMaps
    // (the plan list selected `role=plan` only, and prune deleted every plan of another run).
    let a = fixture("one-ip.yaml"); // genomics, run 0
    let mut b = fixture("three-ips.yaml"); // media
    b.spec.run = 2;
    let mut c = Cluster::default();
    add_finished(&mut c, &a, 8, PassScript::all_done(8, PodResult::default()));
    add_finished(&mut c, &b, 6, PassScript::all_done(6, PodResult::default()));
    c.ijs = vec![a.clone(), b.clone()];
    let plans_before = c.plans.len();
    let shared: Shared = Arc::new(Mutex::new(c));
    for round in 0..2 {
        for name in ["genomics", "media"] {
            let ij = current(&shared, name);
            let (result, calls, _) = run_in(&shared, &ij).await;
            result.unwrap();
            assert_eq!(
                deletes(&calls),
                Vec::<String>::new(),
                "round {round}, {name}"
            );
            // Both jobs' plans are in the one cache; each reconcile selects its own by the job's label
            // (`observe::select`), as the lists by label did, and lists nothing.
            assert!(
                calls.iter().all(|c| c.method != "GET"),
                "{:?}",
                shorts(&calls)
            );
            assert_eq!(
                current(&shared, name).status.unwrap().phase,
                Some(Phase::Succeeded),
                "round {round}, {name}"
            );
        }
    }
    assert_eq!(shared.lock().unwrap().plans.len(), plans_before);
}

#[tokio::test]
async fn prune_deletes_only_what_this_ingestjob_owns() {
    // Labels say "genomics, run 0, plan", but the owner is another object (a deleted and re-created
    // IngestJob of the same name, or someone's copy): not ours to delete, nor to count.
    let ij0 = fixture("one-ip.yaml");
    let mut foreign = ij0.clone();
    foreign.metadata.uid = Some("6f1c2f0e-0000-4000-8000-0000000000ff".into());
    let theirs = scanned(&foreign, 8, totals(), false);
    let ours = scanned(&ij0, 8, totals(), false);
    let mut ij = ij0.clone();
    ij.spec.run = 1;
    let mut c = Cluster::default();
    c.jobs.extend(theirs.jobs.into_iter().map(|mut j| {
        j.metadata.name = Some("someone-elses-scan".into());
        j
    }));
    c.plans.extend(theirs.plans.iter().cloned().map(|mut p| {
        p.metadata.name = Some("someone-elses-plan-0".into());
        p
    }));
    add(&mut c, ours);
    let (result, calls, _) = run(&ij, c).await;
    result.unwrap();
    assert_eq!(
        deletes(&calls),
        [
            "/apis/batch/v1/namespaces/ingest/jobs/genomics-r0-scan",
            "/api/v1/namespaces/ingest/configmaps/genomics-r0-plan-0"
        ],
        "exactly our own run-0 objects"
    );
}

#[tokio::test]
async fn a_recorded_verdict_stays_when_pods_go_the_operator_restarts_and_the_policy_changes() {
    let mut ij = fixture("three-ips.yaml"); // Continue, maxFailedFiles 10
    ij.metadata.resource_version = Some("100".into());
    let mut verify = PassScript::default();
    for s in 0..3 {
        let mut r = result(10, 10, 4);
        r.failures = vec![ingest_api::FileFailure {
            path: format!("s{s}/x"),
            reason: "EACCES".into(),
        }];
        verify = verify.with(s, r);
    }
    let mut c = Cluster::default();
    add_finished(&mut c, &ij, 3, verify);
    c.ijs = vec![ij.clone()];
    let shared: Shared = Arc::new(Mutex::new(c));
    let (result, _, _) = run_in(&shared, &ij).await;
    assert_eq!(result.unwrap(), Action::await_change());
    let record = current(&shared, "media").status.unwrap();
    assert_eq!(
        (record.phase, record.failed_files),
        (Some(Phase::Failed), 12)
    );

    // Pods garbage-collected, the verify Job deleted by hand, the failure policy loosened, the admin
    // policy tightened, and the operator
    // restarted (its passes are gone): nothing changes.
    {
        let mut c = shared.lock().unwrap();
        c.pods.clear();
        c.jobs
            .retain(|j| j.metadata.name.as_deref() != Some("media-r0-verify"));
        c.claims = Arc::default();
        // The admin policy now forbids every server: a recorded verdict is not a run to refuse.
        c.policy = Some(AdmissionPolicy::from_json(r#"{"default": {"servers": []}}"#).unwrap());
        let ij = &mut c.ijs[0];
        ij.spec.failure_policy.max_failed_files = None;
        ij.metadata.generation = Some(5);
    }
    let ij = current(&shared, "media");
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    assert!(
        !shorts(&calls)
            .iter()
            .any(|c| c == "PATCH ingestjobs/status" || c == "POST jobs"),
        "no status write, no Job created again: {:?}",
        shorts(&calls)
    );
    assert_eq!(current(&shared, "media").status.unwrap(), record);
    let claims = shared.lock().unwrap().claims.clone();
    assert!(
        claims.view(&ij, "copy").is_none(),
        "no pass is set up for a recorded run"
    );
}

#[tokio::test]
async fn a_status_computed_from_a_stale_object_is_refused() {
    // The reconcile read resourceVersion 7; the object is at 9 (the record was written meanwhile).
    let mut ij = fixture("one-ip.yaml");
    ij.metadata.resource_version = Some("7".into());
    let mut stored = ij.clone();
    stored.metadata.resource_version = Some("9".into());
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![stored],
        ..Default::default()
    }));
    let (result, calls, _) = run_in(&shared, &ij).await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Conflict, "{err}");
    assert_eq!(status_body(&calls)["phase"], "Pending");
    let write = calls
        .iter()
        .find(|c| c.short() == "PATCH ingestjobs/status")
        .unwrap();
    assert_eq!(write.body["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn fail_job_stops_the_run_at_a_shard_lost_through_its_retries_and_tells_the_workers_to_stop()
{
    let mut ij = fixture("three-ips.yaml");
    ij.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
    ij.spec.failure_policy.max_failed_files = None;
    ij.spec.failure_policy.retries_per_shard = 1;
    let mut obs = scanned(&ij, 6, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 6)
    });
    let mut c = Cluster::default();
    add(&mut c, obs);
    c.ijs = vec![ij.clone()];
    let shared: Shared = Arc::new(Mutex::new(c));
    let (result, _, _) = run_in(&shared, &ij).await;
    result.unwrap();
    assert_eq!(
        current(&shared, "media").status.unwrap().phase,
        Some(Phase::Copying)
    );
    let claims = shared.lock().unwrap().claims.clone();
    let ask = |pod: &str, room| {
        let mut r = claim_request(&ij, "copy", pod);
        r.room = room;
        claims.handle(r).unwrap().shards
    };
    // Worker 1 copies shards 1 and 2 throughout.
    let first = worker_pod_name(&ij, "copy", 0, "first");
    assert_eq!(ask(&first, 1), vec![0]);
    assert_eq!(
        ask(&worker_pod_name(&ij, "copy", 1, "alive"), 2),
        vec![1, 2]
    );
    // Shard 0's pods are killed (OOM) while holding it: the reconcile sees each pod ended and gives
    // its claims back; the second loss uses up retriesPerShard 1.
    for (attempt, pod) in ["first", "second"].into_iter().enumerate() {
        if attempt == 1 {
            assert_eq!(
                ask(&worker_pod_name(&ij, "copy", 0, pod), 1),
                vec![0],
                "the shard came back first"
            );
        }
        shared
            .lock()
            .unwrap()
            .pods
            .push(worker_pod(&ij, "copy", 0, pod, "Failed"));
        let ij = current(&shared, "media");
        let (result, calls, _) = run_in(&shared, &ij).await;
        result.unwrap();
        if attempt == 0 {
            assert!(
                !shorts(&calls).contains(&"PATCH jobs".to_owned()),
                "a shard with retries left goes back to the queue: {:?}",
                shorts(&calls)
            );
            assert_eq!(
                current(&shared, "media").status.unwrap().phase,
                Some(Phase::Copying)
            );
            continue;
        }
        let s = shorts(&calls);
        assert!(!s.contains(&"POST jobs".to_owned()), "no verify Job: {s:?}");
        assert!(
            !s.contains(&"PATCH jobs".to_owned()),
            "no Job is suspended (its pods would be killed mid-report): {s:?}"
        );
        let st = status_body(&calls);
        assert_eq!(st["phase"], "Failed");
        assert_eq!(condition(st, "Stalled")["reason"], "ShardFailed");
        assert_eq!(st["shards"]["failed"], 1);
        assert_eq!(st["checkpoint"]["copy"]["lost"], "0");
        let msg = st["message"].as_str().unwrap();
        assert!(
            msg.contains("1 shard(s) of the copy pass were lost")
                && msg.contains(
                    "the run was stopped: no verify pass, the workers of 1 running Job(s) take no more work"
                ),
            "{msg}"
        );
    }
    // The worker still copying is told to stop at its next message, and takes nothing more.
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 1, "alive"));
    r.holding = vec![1, 2];
    r.room = 2;
    assert_eq!(
        claims.handle(r).unwrap(),
        ClaimResponse {
            shards: vec![],
            state: PassState::Stopped,
            avoid: vec![],
            deletes: Default::default(),
            limits: None,
            closed: false,
        }
    );

    // Later reconciles, by a restarted operator: the record stays, nothing is created, and a
    // worker still asking is told the run moved on.
    shared.lock().unwrap().claims = Arc::default();
    let ij = current(&shared, "media");
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    assert!(
        shorts(&calls).iter().all(|c| c.starts_with("GET")),
        "{:?}",
        shorts(&calls)
    );
    let restarted = shared.lock().unwrap().claims.clone();
    assert_eq!(
        restarted.handle(claim_request(
            &ij,
            "copy",
            &worker_pod_name(&ij, "copy", 1, "alive")
        )),
        Err(Refusal::NoPass)
    );
}

#[tokio::test]
async fn a_copy_job_that_ended_with_shards_never_claimed_moves_on_to_a_verify_pass_its_workers_can_claim()
 {
    // Every copy worker pod ended (the Job is Complete) while shards 5-7 were never claimed: the
    // copy pass lost them, and the verify pass (which re-copies what the copy missed) goes on.
    let ij = fixture("one-ip.yaml"); // verify Metadata, Continue
    let mut obs = scanned(&ij, 8, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "0-1", "", 0)
    });
    let mut c = Cluster::default();
    add(&mut c, obs);
    c.ijs = vec![ij.clone()];
    drive(
        &c.claims,
        &ij,
        "copy",
        8,
        &PassScript::done(0..5, result(1, 10, 0)),
    );
    let shared: Shared = Arc::new(Mutex::new(c));
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    let created: Vec<String> = calls
        .iter()
        .filter(|c| c.short() == "POST jobs")
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, ["genomics-r0-verify"]);
    assert_eq!(status_body(&calls)["phase"], "Verifying");

    // Its workers find a pass to claim from (told "no such pass", they would exit 0 and the run
    // would wait for a pass that never comes).
    let claims = shared.lock().unwrap().claims.clone();
    let pod = worker_pod_name(&ij, "verify", 0, "v");
    let mut r = claim_request(&ij, "verify", &pod);
    r.room = 8;
    let got = claims.handle(r).expect("the verify pass exists");
    assert_eq!(got.shards, (0..8).collect::<Vec<u32>>());
    let mut r = claim_request(&ij, "verify", &pod);
    r.done = (0..8)
        .map(|shard| ShardDone {
            shard,
            result: PodResult {
                files: u64::from(shard >= 5),
                ..Default::default()
            },
        })
        .collect();
    // Every shard is done, but only in the operator's memory: the worker waits for the status.
    assert_eq!(claims.handle(r).unwrap().state, PassState::Wait);
    {
        let mut c = shared.lock().unwrap();
        let job = c
            .jobs
            .iter_mut()
            .find(|j| j.metadata.name.as_deref() == Some("genomics-r0-verify"))
            .unwrap();
        *job = observed_job(job, true, false, "0-1", "", 0);
    }
    let ij = current(&shared, "genomics");
    let (result, calls, _) = run_in(&shared, &ij).await;
    assert_eq!(result.unwrap(), Action::await_change());
    let st = status_body(&calls);
    assert_eq!(
        (&st["phase"], &condition(st, "Ready")["reason"]),
        (&json!("Succeeded"), &json!("Succeeded")),
        "{st}"
    );
    // The status holds the finished pass now: its workers may exit.
    let r = claim_request(&ij, "verify", &pod);
    assert_eq!(claims.handle(r).unwrap().state, PassState::Finished);
}

#[tokio::test]
async fn observed_generation_is_the_one_the_run_uses() {
    // The scan Job was built at generation 1; generation 2 changes threadsPerWorker, which the run's Jobs
    // hold: it applies from the next run, so the status does not claim generation 2.
    let ij1 = fixture("one-ip.yaml");
    let obs = scanned(&ij1, 8, totals(), false);
    let mut ij2 = ij1.clone();
    ij2.metadata.generation = Some(2);
    ij2.spec.threads_per_worker = ingest_api::ThreadsPerWorker::Fixed(64);
    let mut c = Cluster::default();
    add(&mut c, obs.clone());
    let (result, calls, _) = run(&ij2, c).await;
    result.unwrap();
    assert_eq!(status_body(&calls)["observedGeneration"], 1);
    let created = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    assert_eq!(
        created.body["metadata"]["annotations"]["ingest.vfxt.dev/generation"], "2",
        "Jobs record the generation they were built from"
    );

    // maxFailedFiles is read when the verdict is made: a change to it is applied by the running run.
    let mut ij3 = ij1.clone();
    ij3.metadata.generation = Some(3);
    ij3.spec.failure_policy.max_failed_files = Some(5);
    let mut c = Cluster::default();
    add(&mut c, obs);
    let (result, calls, _) = run(&ij3, c).await;
    result.unwrap();
    assert_eq!(status_body(&calls)["observedGeneration"], 3);
}

#[tokio::test]
async fn an_api_error_reaches_the_status_and_an_event_then_clears() {
    let ij = fixture("one-ip.yaml");
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        fail: vec![("PATCH", "serviceaccounts", 503)],
        ..Default::default()
    }));
    let (result, calls, _) = run_in_with(&shared, &ij, true).await;
    let err = result.unwrap_err();
    assert_eq!(err.category(), Category::Throttled);
    let st = status_body(&calls);
    let d = condition(st, "Degraded");
    assert_eq!(
        (&d["status"], &d["reason"]),
        (&json!("True"), &json!("ApiError"))
    );
    assert!(
        d["message"]
            .as_str()
            .unwrap()
            .starts_with("apply ServiceAccount genomics-workers: "),
        "the message names the call: {d}"
    );
    let event = calls.iter().find(|c| c.short() == "POST events").unwrap();
    assert_eq!(event.body["reason"], "ApiError");
    assert_eq!(event.body["type"], "Warning");

    // The API is back: the next reconcile's status drops the condition.
    shared.lock().unwrap().fail.clear();
    let ij = current(&shared, "genomics");
    let (result, calls, _) = run_in(&shared, &ij).await;
    result.unwrap();
    let st = status_body(&calls);
    assert!(
        st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Degraded"),
        "{st}"
    );
}

/// One operator process against `shared`: one context (its memory of applied RBAC objects; no reconcile
/// throttle) whose watch caches hold `caches` throughout, whatever the cluster does (a cache lagging the
/// cluster). Returns the context, the calls so far, and the fake API server (it stops when the context,
/// holding the client, is dropped).
fn operator(
    shared: &Shared,
    caches: Caches,
) -> (
    Arc<Context>,
    Arc<Mutex<Vec<Call>>>,
    tokio::task::JoinHandle<()>,
) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(handle, shared.clone(), calls.clone()));
    let claims = shared.lock().unwrap().claims.clone();
    let ctx = Arc::new(
        Context::new(
            Client::new(svc, "default"),
            settings(),
            Arc::new(Metrics::default()),
            None,
            Duration::from_secs(5),
        )
        .with_claims(claims)
        .with_caches(None, caches)
        .with_reconcile_gap(Duration::ZERO),
    );
    (ctx, calls, server)
}

/// The calls since the last time this was asked.
fn taken(calls: &Mutex<Vec<Call>>) -> Vec<String> {
    shorts(&std::mem::take(&mut *calls.lock().unwrap()))
}

#[tokio::test]
async fn unchanged_rbac_is_applied_once_and_a_cache_that_lags_only_repeats_a_create() {
    let ij = fixture("one-ip.yaml");
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        ..Default::default()
    }));
    // The caches never see the scan Job this operator creates: they lag the cluster throughout.
    let (ctx, calls, server) = operator(&shared, Caches::listed(vec![], vec![], vec![]));
    let pass = || reconcile(Arc::new(current(&shared, "genomics")), ctx.clone());
    pass().await.unwrap();
    assert_eq!(
        tiered(taken(&calls)),
        [
            "PATCH serviceaccounts",
            "POST jobs",
            "PATCH ingestjobs/status"
        ]
    );
    // The same RBAC objects are not applied again. The scan Job, missing from the cache, is created
    // again; the API server says it exists (409), which is no error; nothing is deleted.
    pass().await.unwrap();
    assert_eq!(taken(&calls), ["POST jobs"]);
    assert_eq!(shared.lock().unwrap().jobs.len(), 1);
    // An apply error forgets what was applied: the pass after it applies the identity again (a
    // failed pass may have been a ServiceAccount the API server lost).
    shared.lock().unwrap().fail = vec![("POST", "jobs", 500)];
    pass().await.unwrap_err();
    assert_eq!(taken(&calls), ["POST jobs", "PATCH ingestjobs/status"]);
    shared.lock().unwrap().fail.clear();
    pass().await.unwrap();
    assert_eq!(
        tiered(taken(&calls))[..2],
        ["PATCH serviceaccounts", "POST jobs"]
    );
    drop(ctx);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_finished_scan_whose_plan_the_cache_lacks_is_checked_with_the_api_server() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 8, totals(), false);
    // The Job watch delivered the finished scan; the ConfigMap watch has not delivered its plan yet.
    let lagging = Caches::listed(obs.jobs.clone(), vec![], vec![]);
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs.clone(),
            plans: obs.plans.clone(),
            caches: Some(lagging.clone()),
            ..Default::default()
        },
    )
    .await;
    result.unwrap();
    let gets: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "GET")
        .map(|c| c.path.split('?').next().unwrap())
        .collect();
    assert_eq!(
        gets,
        ["/api/v1/namespaces/ingest/configmaps/genomics-r0-plan-0"]
    );
    let created = calls.iter().find(|c| c.short() == "POST jobs").unwrap();
    assert_eq!(created.body["metadata"]["name"], "genomics-r0-copy");
    assert_ne!(status_body(&calls)["phase"], Phase::Failed.as_str());

    // The API server has none either: then the scan did finish without storing one.
    let (result, calls, _) = run(
        &ij,
        Cluster {
            jobs: obs.jobs,
            caches: Some(lagging),
            ..Default::default()
        },
    )
    .await;
    result.unwrap();
    let st = status_body(&calls);
    assert_eq!(st["phase"], Phase::Failed.as_str());
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("without storing a plan"),
        "{st}"
    );
}

#[tokio::test]
async fn a_cache_that_has_not_listed_is_never_read() {
    use kube::runtime::reflector::store;
    let ij = fixture("one-ip.yaml");
    // The Jobs and plans caches listed (nothing); the pods cache's watch ended before its first list.
    let listed = Caches::listed(vec![], vec![], vec![]);
    let (pods, writer) = store::<Pod>();
    drop(writer);
    let (result, calls, _) = run(
        &ij,
        Cluster {
            caches: Some(Caches { pods, ..listed }),
            ..Default::default()
        },
    )
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, ingest_operator::Error::CacheNotReady(what) if what == "Pods"),
        "{err}"
    );
    assert_eq!(err.category(), Category::Transport, "retried soon");
    // Nothing created from an empty-looking cache: only the error goes to the status.
    assert_eq!(shorts(&calls), ["PATCH ingestjobs/status"]);
    assert_eq!(
        condition(status_body(&calls), "Degraded")["reason"],
        "ApiError"
    );
}

/// A scan pod's plan of `shards` shards in two pieces, sent as the scan of `ij` (its uid and run)
/// sends it, stored by `plan_store::store_part` against `shared` as the operator's endpoint
/// stores each piece: the last answer (the scan stops at a `Kept`) and the calls.
async fn store_plan(
    shared: &Shared,
    ij: &IngestJob,
    shards: u64,
) -> (
    Result<ingest_operator::plan_store::Saved, ingest_operator::plan_store::Refused>,
    Vec<String>,
) {
    use ingest_operator::plan_store::{Owner, PlanSummary, Saved, parts, store_part};
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(handle, shared.clone(), calls.clone()));
    let owner = Owner {
        namespace: ij.namespace().unwrap(),
        name: ij.name_any(),
        uid: ij.uid().unwrap(),
        run: ij.spec.run,
    };
    let summary = PlanSummary {
        chunks: 2,
        shards,
        ..Default::default()
    };
    let chunks = ["{\"plan\":".to_owned(), "1}".to_owned()];
    let client = Client::new(svc, "default");
    let mut last = Ok(Saved::Stored);
    for part in parts(&owner, "scan-pod", &chunks, &summary) {
        last = store_part(client.clone(), &part).await;
        if !matches!(last, Ok(Saved::Stored)) {
            break;
        }
    }
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("fake API server stops when the client is dropped")
        .unwrap();
    let calls = calls.lock().unwrap().iter().map(Call::short).collect();
    (last, calls)
}

/// The run moves on from a committed plan at once (`stage::stage`), so a scan attempt after
/// one that committed it (its pod ended before its exit reached the Job) must not store a
/// second plan under the same names: the workers' shard numbers would change meaning. One
/// that finds chunk 0 missing, uncommitted or another IngestJob's stores its own.
#[tokio::test]
async fn a_retried_scan_keeps_the_plan_an_earlier_attempt_committed() {
    use ingest_operator::plan_store::{Saved, summary_of};
    let ij = fixture("three-ips.yaml");
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        ..Default::default()
    }));
    let (saved, calls) = store_plan(&shared, &ij, 7).await;
    assert_eq!(saved.unwrap(), Saved::Stored);
    assert_eq!(
        calls,
        [
            "GET ingestjobs",
            "GET configmaps",
            "PATCH configmaps",
            "GET ingestjobs",
            "GET configmaps",
            "PATCH configmaps"
        ],
        "for each piece: the job's run and chunk 0 read, then the piece stored"
    );
    let (saved, calls) = store_plan(&shared, &ij, 9).await;
    match saved.unwrap() {
        Saved::Kept(s) => assert_eq!(s.shards, 7, "the first attempt's plan"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        calls,
        ["GET ingestjobs", "GET configmaps"],
        "nothing written"
    );
    let committed = |c: &Cluster| {
        c.plans
            .iter()
            .filter_map(|m| summary_of(&m.metadata))
            .map(|s| s.shards)
            .collect::<Vec<_>>()
    };
    assert_eq!(committed(&shared.lock().unwrap()), [7]);
    // A chunk 0 of an older IngestJob of the same name (a different uid) is replaced.
    let mut other = ij.clone();
    other.metadata.uid = Some("another-uid".into());
    shared.lock().unwrap().ijs = vec![other.clone()];
    let (saved, _) = store_plan(&shared, &other, 5).await;
    assert_eq!(saved.unwrap(), Saved::Stored);
    assert_eq!(committed(&shared.lock().unwrap()), [5]);
}

/// The operator writes a plan only for the current run of a live IngestJob, whatever a scan pod
/// says: a scan of a job deleted and created again under its name, or of an earlier run, writes
/// nothing; a piece that disagrees with itself is refused before any call; an API failure is
/// one the scan asks again about.
#[tokio::test]
async fn a_plan_is_stored_only_for_the_current_run_of_the_job_it_names() {
    use ingest_operator::plan_store::Refused;
    let ij = fixture("three-ips.yaml");
    let shared: Shared = Arc::new(Mutex::new(Cluster {
        ijs: vec![ij.clone()],
        ..Default::default()
    }));
    let mut gone = ij.clone();
    gone.metadata.uid = Some("deleted-uid".into());
    let (saved, calls) = store_plan(&shared, &gone, 5).await;
    assert!(
        matches!(&saved, Err(Refused::NotThisRun(m)) if m.contains("deleted-uid")),
        "{saved:?}"
    );
    assert_eq!(calls, ["GET ingestjobs"]);
    let mut earlier = ij.clone();
    earlier.spec.run = ij.spec.run - 1;
    let (saved, _) = store_plan(&shared, &earlier, 5).await;
    assert!(
        matches!(&saved, Err(Refused::NotThisRun(m)) if m.contains("run")),
        "{saved:?}"
    );
    assert!(shared.lock().unwrap().plans.is_empty());
    // A piece counting itself past the plan's end, or chunk 0 without its summary.
    let mut part = ingest_operator::plan_store::PlanPart {
        namespace: ij.namespace().unwrap(),
        job: ij.name_any(),
        uid: ij.uid().unwrap(),
        run: ij.spec.run,
        part: 2,
        parts: 2,
        ..Default::default()
    };
    // No API server behind this client: a call would fail as Api, not Bad.
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    drop(handle);
    let client = Client::new(svc, "default");
    let bad = ingest_operator::plan_store::store_part(client.clone(), &part).await;
    assert!(
        matches!(&bad, Err(Refused::Bad(e)) if e.to_string().contains("chunk 2")),
        "{bad:?}"
    );
    part.part = 0;
    let bad = ingest_operator::plan_store::store_part(client, &part).await;
    assert!(
        matches!(&bad, Err(Refused::Bad(e)) if e.to_string().contains("summary")),
        "{bad:?}"
    );
    // The API server failing: asked again.
    shared
        .lock()
        .unwrap()
        .fail
        .push(("PATCH", "configmaps", 500));
    let (saved, _) = store_plan(&shared, &ij, 5).await;
    assert!(matches!(saved, Err(Refused::Api(_))), "{saved:?}");
}
