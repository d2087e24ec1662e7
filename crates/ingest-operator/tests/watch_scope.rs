//! Which API paths the running controller watches (`controller::run_controller` against a tower-test mock API
//! server, as in mock_api.rs): with `--namespaces` every list and watch goes to `/namespaces/<ns>/` paths, which
//! is all the chart's per-namespace Roles allow; without, they are cluster-wide.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::settings;
use http::{Request, Response};
use ingest_operator::controller::run_controller;
use ingest_operator::metrics::Metrics;
use ingest_operator::reconcile::Context;
use kube::Client;
use kube::client::Body;
use serde_json::json;

const KINDS: [&str; 4] = ["ingestjobs", "jobs", "configmaps", "pods"];

/// Answers every list with an empty list and keeps watch requests open (never answered, like a quiet cluster);
/// records each request's path.
async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    paths: Arc<Mutex<Vec<String>>>,
) {
    let mut open_watches = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let path = req.uri().to_string();
        paths.lock().unwrap().push(path.clone());
        if path.contains("watch=true") {
            open_watches.push(send);
            continue;
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&list).unwrap()))
                .unwrap(),
        );
    }
}

/// Kind (plural) of a request path and its namespace, if namespaced.
fn scope_of(path: &str) -> (String, Option<String>) {
    let segs: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
    let kind = segs
        .iter()
        .rev()
        .find(|s| KINDS.contains(s))
        .unwrap_or(&"?")
        .to_string();
    let ns = segs
        .iter()
        .position(|s| *s == "namespaces")
        .map(|i| segs[i + 1].to_owned());
    (kind, ns)
}

/// Runs the controllers until a list and a watch of every kind arrived for each expected scope, then shuts
/// them down; returns the request paths.
async fn watched_paths(namespaces: &[String], scopes: &[Option<String>]) -> Vec<String> {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve(handle, paths.clone()));
    let ctx = Arc::new(Context::new(
        Client::new(svc, "default"),
        settings(),
        Arc::new(Metrics::default()),
        None,
        Duration::from_secs(5),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let namespaces = namespaces.to_vec();
    let (_passes_ended, passes_ended_rx) = futures::channel::mpsc::unbounded();
    let controllers = tokio::spawn(async move {
        run_controller(ctx, &namespaces, passes_ended_rx, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    let want: BTreeSet<(String, Option<String>, bool)> = scopes
        .iter()
        .flat_map(|ns| {
            KINDS
                .iter()
                .flat_map(move |k| [false, true].map(|w| (k.to_string(), ns.clone(), w)))
        })
        .collect();
    let seen = || -> BTreeSet<(String, Option<String>, bool)> {
        paths
            .lock()
            .unwrap()
            .iter()
            .map(|p| {
                let (k, ns) = scope_of(p);
                (k, ns, p.contains("watch=true"))
            })
            .collect()
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        while !want.is_subset(&seen()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not every list+watch arrived; missing {:?}",
            want.difference(&seen()).collect::<Vec<_>>()
        )
    });
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), controllers)
        .await
        .expect("every controller stops on the shared shutdown")
        .unwrap();
    server.abort();
    paths.lock().unwrap().clone()
}

#[tokio::test]
async fn with_namespaces_every_request_stays_inside_them() {
    let namespaces = vec!["team-a".to_owned(), "team-b".to_owned()];
    let scopes: Vec<Option<String>> = namespaces.iter().cloned().map(Some).collect();
    let paths = watched_paths(&namespaces, &scopes).await;
    for p in &paths {
        assert!(
            p.contains("/namespaces/team-a/") || p.contains("/namespaces/team-b/"),
            "a request outside the watched namespaces (the chart's Roles would forbid it): {p}"
        );
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/apis/ingest.vfxt.dev/v1alpha1/namespaces/team-b/ingestjobs?")),
        "{paths:#?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/apis/batch/v1/namespaces/team-a/jobs?")),
        "{paths:#?}"
    );
}

#[tokio::test]
async fn without_namespaces_the_watches_are_cluster_wide() {
    let paths = watched_paths(&[], &[None]).await;
    for p in &paths {
        assert!(!p.contains("/namespaces/"), "{p}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/apis/ingest.vfxt.dev/v1alpha1/ingestjobs?")),
        "{paths:#?}"
    );
}
