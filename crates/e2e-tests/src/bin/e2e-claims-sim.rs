//! `e2e-claims-sim`: N simulated copy workers of one IngestJob's current run, for measuring what
//! the operator asks of the Kubernetes API server at 100 or 500 workers (issue 13), on the e2e
//! control plane, without running 500 copy processes on a 2-core machine.
//!
//! Each simulated worker is a real pod object (never scheduled: `schedulerName` names no
//! scheduler) with a real projected-style token bound to it (TokenRequest, the claims audience),
//! so the operator authenticates it exactly as a worker: a TokenReview, cached. It claims one
//! shard and holds it, sending a heartbeat every 5 s as a worker does while a shard runs; it
//! never completes a shard (the IngestJob's real worker does the copying, and takes the held
//! shards when their leases run out after the simulation). The operator's own request counter
//! (`vfxt_ingest_api_requests_total` on its /metrics) is read before and after a window.
//!
//! Prints a table and one JSON line: requests per second by verb and resource, in all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Parser;
use ingest_api::IngestJob;
use ingest_api::claims::{ClaimRequest, ClaimResponse, PATH, TOKEN_AUDIENCE};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

#[derive(Parser)]
#[command(
    name = "e2e-claims-sim",
    about = "Simulated claims workers; measures the operator's API requests"
)]
struct Args {
    /// The IngestJob's namespace.
    #[arg(long)]
    namespace: String,
    /// The IngestJob (its copy pass must be running, with more shards than workers).
    #[arg(long)]
    ingestjob: String,
    /// Simulated workers.
    #[arg(long)]
    workers: usize,
    /// The operator's claims endpoint (what worker pods are given).
    #[arg(long)]
    claims_url: String,
    /// The operator's /metrics URL.
    #[arg(long)]
    metrics_url: String,
    /// Length of the measured window, once every worker holds a shard.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

const HEARTBEAT: Duration = Duration::from_secs(ingest_api::claims::HEARTBEAT_SECONDS);

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let (ij, pods) = rt.block_on(make_pods(&args))?;
    let result = simulate(&args, &ij, &pods);
    rt.block_on(delete_pods(&args, &pods));
    let (rates, total, window) = result?;
    println!("\n| verb | resource | requests/s |\n|---|---|---|");
    for ((verb, resource), r) in &rates {
        println!("| {verb} | {resource} | {r:.3} |");
    }
    println!(
        "| all | | {total:.3} |\n\n{} simulated workers, each holding a shard and beating every {} s, over {:.0} s",
        args.workers,
        HEARTBEAT.as_secs(),
        window
    );
    let by: serde_json::Map<String, serde_json::Value> = rates
        .iter()
        .map(|((v, r), x)| {
            (
                format!("{v} {r}"),
                serde_json::json!((x * 1000.0).round() / 1000.0),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "workers": args.workers,
            "windowSeconds": window,
            "apiRequestsPerSecond": (total * 1000.0).round() / 1000.0,
            "byVerbAndResource": by,
        })
    );
    Ok(())
}

struct SimPod {
    name: String,
    token: String,
}

async fn make_pods(args: &Args) -> Result<(IngestJob, Vec<SimPod>), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("kube client: {e}"))?;
    let ijs: Api<IngestJob> = Api::namespaced(client.clone(), &args.namespace);
    let ij = ijs
        .get(&args.ingestjob)
        .await
        .map_err(|e| format!("get IngestJob {}: {e}", args.ingestjob))?;
    let job = ingest_operator::names::pass_job(&ij.name_any(), ij.spec.run, "copy");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &args.namespace);
    let mut out = Vec::new();
    for i in 0..args.workers {
        let name = format!("{job}-{i}-sim");
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                // No scheduler has this name: the pod is never run, only authenticated.
                scheduler_name: Some("vfxt-e2e-simulated".into()),
                service_account_name: Some("default".into()),
                containers: vec![Container {
                    name: "worker".into(),
                    image: Some("simulated".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| format!("create pod {name}: {e}"))?;
        let tr = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![TOKEN_AUDIENCE.into()]),
                bound_object_ref: Some(BoundObjectReference {
                    kind: Some("Pod".into()),
                    api_version: Some("v1".into()),
                    name: Some(name.clone()),
                    uid: created.uid(),
                }),
                expiration_seconds: Some(3600),
            }),
            ..Default::default()
        };
        let token = sas
            .create_token_request("default", &PostParams::default(), &tr)
            .await
            .map_err(|e| format!("token for {name}: {e}"))?
            .status
            .and_then(|s| s.token)
            .ok_or("a TokenRequest without a token")?;
        out.push(SimPod { name, token });
    }
    Ok((ij, out))
}

async fn delete_pods(args: &Args, pods: &[SimPod]) {
    let Ok(client) = Client::try_default().await else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client, &args.namespace);
    for p in pods {
        let _ = api.delete(&p.name, &DeleteParams::default()).await;
    }
}

type Counts = BTreeMap<(String, String), f64>;

/// The operator's request counters.
fn scrape(agent: &ureq::Agent, url: &str) -> Result<Counts, String> {
    let text = agent
        .get(url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut out = Counts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("vfxt_ingest_api_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").ok_or("a malformed sample")?;
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        out.insert(
            (label("verb"), label("resource")),
            value.trim().parse().map_err(|_| "a malformed value")?,
        );
    }
    if out.is_empty() {
        return Err(format!("{url}: no vfxt_ingest_api_requests_total series"));
    }
    Ok(out)
}

fn simulate(args: &Args, ij: &IngestJob, pods: &[SimPod]) -> Result<(Counts, f64, f64), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{PATH}", args.claims_url.trim_end_matches('/'));
    let holding = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::Mutex::new(None::<String>));
    std::thread::scope(|s| {
        for p in pods {
            let (agent, url, holding, stop, failed) = (
                agent.clone(),
                url.clone(),
                holding.clone(),
                stop.clone(),
                failed.clone(),
            );
            s.spawn(move || {
                let mut req = ClaimRequest {
                    namespace: args.namespace.clone(),
                    job: ij.name_any(),
                    uid: ij.uid().unwrap_or_default(),
                    run: ij.spec.run,
                    role: "copy".into(),
                    worker: p.name.clone(),
                    room: 1,
                    ..Default::default()
                };
                let mut counted = false;
                while !stop.load(Relaxed) {
                    req.progress.at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let sent = agent
                        .post(&url)
                        .header("Authorization", &format!("Bearer {}", p.token))
                        .send_json(&req);
                    match sent {
                        Ok(mut r) if r.status() == 200 => {
                            let a: ClaimResponse = match r.body_mut().read_json() {
                                Ok(a) => a,
                                Err(e) => {
                                    *failed.lock().unwrap() = Some(format!("{}: {e}", p.name));
                                    return;
                                }
                            };
                            req.holding.extend(a.shards);
                            if !req.holding.is_empty() {
                                req.room = 0;
                                if !counted {
                                    counted = true;
                                    holding.fetch_add(1, Relaxed);
                                }
                            }
                        }
                        // Not set up yet (503): ask again.
                        Ok(r) if r.status() == 503 => {}
                        Ok(r) => {
                            *failed.lock().unwrap() =
                                Some(format!("{}: answered {}", p.name, r.status()));
                            return;
                        }
                        Err(e) => {
                            *failed.lock().unwrap() = Some(format!("{}: {e}", p.name));
                            return;
                        }
                    }
                    let pause = if req.holding.is_empty() {
                        Duration::from_millis(500)
                    } else {
                        HEARTBEAT
                    };
                    let until = Instant::now() + pause;
                    while Instant::now() < until && !stop.load(Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while holding.load(Relaxed) < pods.len() {
            if let Some(e) = failed.lock().unwrap().clone() {
                stop.store(true, Relaxed);
                return Err(e);
            }
            if Instant::now() > deadline {
                stop.store(true, Relaxed);
                return Err(format!(
                    "only {} of {} simulated workers got a shard in 300 s (more shards than workers?)",
                    holding.load(Relaxed),
                    pods.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = scrape(&agent, &args.metrics_url);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(args.seconds));
        let after = scrape(&agent, &args.metrics_url);
        let window = t0.elapsed().as_secs_f64();
        stop.store(true, Relaxed);
        let (before, after) = (before?, after?);
        if let Some(e) = failed.lock().unwrap().clone() {
            return Err(e);
        }
        let rates: Counts = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - before.get(k).copied().unwrap_or(0.0)) / window,
                )
            })
            .filter(|(_, r)| *r > 0.0)
            .collect();
        let total = rates.values().sum();
        Ok((rates, total, window))
    })
}
