//! Lease election against a scripted API server: create when absent, wait while another replica renews,
//! take over an expired Lease, and lose a race cleanly (409).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use ingest_operator::leader::{LeaseConfig, Step, try_acquire_or_renew};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

fn cfg() -> LeaseConfig {
    LeaseConfig {
        name: "op".into(),
        namespace: "sys".into(),
        identity: "me".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
        address: Some("10.244.0.7:8080".into()),
    }
}

fn lease(holder: &str, renewed_secs_ago: i64) -> Value {
    let t = Timestamp::now().as_second() - renewed_secs_ago;
    let renew = Timestamp::from_second(t)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "op", "namespace": "sys", "resourceVersion": "7",
                     "annotations": {"ingest.vfxt.dev/claims-address": format!("{holder}.pod:8080")}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "leaseTransitions": 1}
    })
}

/// Answers GET with `current` (404 when None) and writes with `write_code`; returns (method, body) of each call.
async fn step(current: Option<Value>, write_code: u16) -> (Step, Vec<(String, Value)>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            log.lock().unwrap().push((method.clone(), body.clone()));
            let (code, resp) = match (method.as_str(), &current) {
                ("GET", Some(l)) => (200, l.clone()),
                ("GET", None) => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                _ if write_code == 409 => (
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}),
                ),
                _ => (write_code, body),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&resp).unwrap()))
                    .unwrap(),
            );
        }
    });
    let client = Client::new(svc, "default");
    let held = try_acquire_or_renew(&client, &cfg()).await.unwrap();
    drop(client);
    server.await.unwrap();
    let calls = calls.lock().unwrap().clone();
    (held, calls)
}

#[tokio::test]
async fn absent_lease_is_created_with_us_as_holder() {
    let (held, calls) = step(None, 201).await;
    assert!(held.held());
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["GET", "POST"]
    );
    assert_eq!(calls[1].1["spec"]["holderIdentity"], "me");
    assert_eq!(calls[1].1["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(
        calls[1].1["metadata"]["annotations"]["ingest.vfxt.dev/claims-address"], "10.244.0.7:8080",
        "standbys pass claims on to the holder's address"
    );
}

#[tokio::test]
async fn a_fresh_lease_of_another_replica_is_left_alone() {
    let (held, calls) = step(Some(lease("other", 3)), 200).await;
    let Step::Standby { leader, retry } = held else {
        panic!("{held:?}")
    };
    assert_eq!(
        leader.as_deref(),
        Some("other.pod:8080"),
        "a standby learns where the leader serves claims"
    );
    assert!(
        retry.is_some_and(|r| r <= Duration::from_secs(5)),
        "{retry:?}"
    );
    assert_eq!(calls.len(), 1, "no write while another replica leads");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version() {
    let (held, calls) = step(Some(lease("other", 60)), 200).await;
    assert!(held.held());
    assert_eq!(calls[1].0, "PUT");
    assert_eq!(
        calls[1].1["metadata"]["annotations"]["ingest.vfxt.dev/claims-address"], "10.244.0.7:8080",
        "the old holder's address is replaced with ours"
    );
    assert_eq!(
        calls[1].1["metadata"]["resourceVersion"], "7",
        "optimistic concurrency: a racing writer gets 409"
    );
    assert_eq!(calls[1].1["spec"]["holderIdentity"], "me");
    assert_eq!(calls[1].1["spec"]["leaseTransitions"], 2);
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_an_error() {
    let (held, calls) = step(Some(lease("other", 60)), 409).await;
    assert_eq!(
        held,
        Step::Standby {
            leader: None,
            retry: None
        }
    );
    assert_eq!(calls.len(), 2);
}

#[tokio::test]
async fn our_own_lease_is_renewed() {
    let (held, calls) = step(Some(lease("me", 4)), 200).await;
    assert!(held.held());
    assert_eq!(calls[1].0, "PUT");
    assert_eq!(
        calls[1].1["spec"]["leaseTransitions"], 1,
        "renewing is not a transition"
    );
}
