//! The pod-side reporter against a scripted API server: it patches only the progress annotation, skips
//! unchanged samples, and flushes the last one on finish.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use ingest_api::report::PodProgress;
use ingest_operator::plan_store::Owner;
use ingest_operator::pod::{PodEnv, ProgressReporter, Ticks};
use kube::Client;
use kube::client::Body;
use serde_json::Value;

fn pod_env() -> PodEnv {
    PodEnv {
        pod: "media-r0-copy-3-abcde".into(),
        owner: Owner {
            namespace: "ingest".into(),
            name: "media".into(),
            uid: "u".into(),
            run: 0,
        },
        plan_prefix: "media-r0-plan".into(),
    }
}

fn sample(files: u64) -> PodProgress {
    PodProgress {
        files,
        bytes: files * 10,
        failed: 0,
        directories: 0,
        checked: 0,
        at: 1_700_000_000 + files as i64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporter_patches_changed_samples_and_flushes_on_finish() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
    // Each call as it comes, for the test to wait on.
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel::<()>();
    let log = calls.clone();
    let server = tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
            log.lock().unwrap().push((method, path, body));
            let pod =
                serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&pod).unwrap()))
                    .unwrap(),
            );
            let _ = arrived_tx.send(());
        }
    });
    let client = Client::new(svc, "default");
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The test's hand on the clock: room for one tick, so a send returns once the tick before
        // it was taken, and the one before that has been dealt with (the reporter's loop takes a
        // tick only when done with the last).
        let (tick, ticks) = tokio::sync::mpsc::channel::<()>(1);
        let r = ProgressReporter::start_with(runtime, client, pod_env(), Ticks::Told(ticks));
        r.update(sample(1));
        tick.blocking_send(()).unwrap();
        arrived_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the first sample is sent at the first tick");
        // Unchanged: a tick dealt with, and nothing sent again.
        r.update(sample(1));
        for _ in 0..3 {
            tick.blocking_send(()).unwrap();
        }
        r.update(sample(7));
        r.finish(); // the last sample goes out before finish returns
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (method, path, _) in &calls {
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "PATCH",
                "/api/v1/namespaces/ingest/pods/media-r0-copy-3-abcde"
            )
        );
    }
    let sent: Vec<PodProgress> = calls
        .iter()
        .map(|(_, _, b)| {
            serde_json::from_str(
                b["metadata"]["annotations"]["ingest.vfxt.dev/progress"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(sent, [sample(1), sample(7)]);
    assert_eq!(
        calls[0].2.as_object().unwrap().len(),
        1,
        "only metadata.annotations is patched"
    );
}
