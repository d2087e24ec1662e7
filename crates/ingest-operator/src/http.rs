//! `/metrics`, `/healthz` and `/readyz`, the workers' claims endpoint (`POST /claims/v1`,
//! [`crate::claims`]) and the scan's plan endpoint (`POST /claims/v1/plan`, [`crate::plan_store`])
//! on a plain HTTP/1.1 listener. Five fixed routes do not need an HTTP framework; each connection
//! serves one request and closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use std::pin::Pin;

use crate::claims::{Refusal, Registry};
use crate::error::{Error, Result};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::plan_store::{self, PlanPart, Refused, Saved};
use crate::token::Authenticator;

/// The claims endpoint's parts: the passes, who may talk to them, where the scans' plans go, and
/// whether this replica holds them (a standby passes messages on to the leader).
pub struct Claims {
    pub registry: Arc<Registry>,
    pub auth: Arc<dyn Authenticator>,
    pub plans: Arc<dyn PlanWriter>,
    pub leadership: Arc<Leadership>,
}

/// Stores a piece of a scan's plan (the API server in the operator: [`plan_store::store_part`]).
pub trait PlanWriter: Send + Sync {
    fn store<'a>(
        &'a self,
        part: &'a PlanPart,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Saved, Refused>> + Send + 'a>>;
}

impl PlanWriter for kube::Client {
    fn store<'a>(
        &'a self,
        part: &'a PlanPart,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<Saved, Refused>> + Send + 'a>> {
        Box::pin(plan_store::store_part(self.clone(), part))
    }
}

/// Header of a claims message a standby passed on: it is never passed on again (replicas that
/// share one address, as on a host network, could otherwise send it round).
const PASSED_ON: &str = "x-vfxt-ingest-passed-on";
/// Longest wait for the leader's answer to a message passed on (the worker waits 30 s).
const PASS_ON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Largest message read (a worker's `done` list with its failures is a few KiB; a piece of a
/// plan at most [`plan_store::MAX_CHUNK_BYTES`], JSON-escaped).
const MAX_BODY: usize = 4 << 20;

/// Shared probe state.
#[derive(Default)]
pub struct Health {
    /// Set once the controller runs (this replica leads) or stands by healthy.
    pub ready: AtomicBool,
}

/// Status line and body for a request path (pure).
pub fn route(path: &str, metrics: &Metrics, health: &Health) -> (u16, &'static str, String) {
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" if health.ready.load(Ordering::Relaxed) => (200, "text/plain", "ready\n".into()),
        "/readyz" => (503, "text/plain", "not ready\n".into()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// Binds `addr` (errors name it) and returns the listener, so the caller learns about a busy port at startup.
///
/// With SO_REUSEPORT: operator replicas that share one network (hostNetwork pods, the e2e rig's
/// node) share the port, and the kernel deals connections between them; a standby passes the
/// claims messages it gets on to the leader. A port held by another program still fails.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let io = |source| Error::Io {
        what: format!("bind metrics/health port {addr}"),
        source,
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(io)?;
    socket.set_reuseaddr(true).map_err(io)?;
    socket.set_reuseport(true).map_err(io)?;
    socket.bind(addr).map_err(io)?;
    socket.listen(1024).map_err(io)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    claims: Option<Arc<Claims>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut sock, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r { Ok(c) => c, Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; } },
        };
        let (metrics, health, claims) = (metrics.clone(), health.clone(), claims.clone());
        tokio::spawn(async move {
            let (code, ctype, body) = match read_request(&mut sock).await {
                Some(req) if req.method == "POST" && req.path == ingest_api::claims::PATH => {
                    match &claims {
                        Some(c) => claim(c, &req).await,
                        None => (503, "text/plain", "claims are not served here\n".into()),
                    }
                }
                Some(req) if req.method == "POST" && req.path == ingest_api::claims::PLAN_PATH => {
                    match &claims {
                        Some(c) => plan_part(c, &req).await,
                        None => (503, "text/plain", "plans are not taken here\n".into()),
                    }
                }
                Some(req) => route(&req.path, &metrics, &health),
                None => (400, "text/plain", "bad request\n".into()),
            };
            let reason = match code {
                200 => "OK",
                400 => "Bad Request",
                401 => "Unauthorized",
                403 => "Forbidden",
                404 => "Not Found",
                408 => "Request Timeout",
                409 => "Conflict",
                413 => "Payload Too Large",
                _ => "Service Unavailable",
            };
            let resp = format!(
                "HTTP/1.1 {code} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    /// Sent on by a standby ([`PASSED_ON`]).
    passed_on: bool,
    body: Vec<u8>,
}

/// Reads the request head and, with a `content-length`, the body (at most [`MAX_BODY`]).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let (mut length, mut authorization, mut passed_on) = (0usize, None, false);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().ok()?;
            } else if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.to_owned());
            } else if k.eq_ignore_ascii_case(PASSED_ON) {
                passed_on = true;
            }
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => body.extend_from_slice(&chunk[..k]),
        }
    }
    body.truncate(length);
    Some(Request {
        method,
        path,
        authorization,
        passed_on,
        body,
    })
}

/// One claims message: authenticate the pod, then hand the message to its pass; on a standby,
/// pass it on to the leader.
async fn claim(c: &Claims, req: &Request) -> (u16, &'static str, String) {
    if !c.leadership.leading() {
        return pass_on(&c.leadership, req).await;
    }
    let msg: ingest_api::claims::ClaimRequest = match serde_json::from_slice(&req.body) {
        Ok(m) => m,
        Err(e) => return (400, "text/plain", format!("claims message: {e}\n")),
    };
    let token = match bearer(req) {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if let Err(why) = c.auth.authorize(token, (&msg).into()).await {
        tracing::warn!(worker = %msg.worker, job = %msg.job, namespace = %msg.namespace, %why, "claims message refused");
        return (403, "text/plain", format!("{why}\n"));
    }
    match c.registry.handle_held(msg, crate::claims::HOLD).await {
        Ok(r) => (
            200,
            "application/json",
            serde_json::to_string(&r).expect("a claims answer serializes"),
        ),
        Err(Refusal::NoPass) => (
            404,
            "text/plain",
            "no such pass: the run moved on or the IngestJob is gone\n".into(),
        ),
        Err(Refusal::NotReady) => (
            503,
            "text/plain",
            "this operator has not taken up the job yet: ask again\n".into(),
        ),
    }
}

/// The request's bearer token, or the 401 answer to give.
fn bearer(req: &Request) -> std::result::Result<&str, (u16, &'static str, String)> {
    req.authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or_else(|| {
            (
                401,
                "text/plain",
                "no bearer token: the pod's projected service-account token is sent as `Authorization: Bearer`\n".into(),
            )
        })
}

/// One piece of a scan's plan: authenticate the scan pod, then store the piece; on a standby,
/// pass it on to the leader. The answer is [`Saved`] as JSON; a piece that is wrong is 400, one
/// of no current run 409 (the scan can do nothing about either), an API failure 503 (ask again).
async fn plan_part(c: &Claims, req: &Request) -> (u16, &'static str, String) {
    if !c.leadership.leading() {
        return pass_on(&c.leadership, req).await;
    }
    let part: PlanPart = match serde_json::from_slice(&req.body) {
        Ok(m) => m,
        Err(e) => return (400, "text/plain", format!("plan piece: {e}\n")),
    };
    let token = match bearer(req) {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if let Err(why) = c.auth.authorize(token, part.sender()).await {
        tracing::warn!(pod = %part.worker, job = %part.job, namespace = %part.namespace, %why, "plan piece refused");
        return (403, "text/plain", format!("{why}\n"));
    }
    match c.plans.store(&part).await {
        Ok(saved) => (
            200,
            "application/json",
            serde_json::to_string(&saved).expect("a plan answer serializes"),
        ),
        Err(e @ Refused::Bad(_)) => (400, "text/plain", format!("{e}\n")),
        Err(e @ Refused::NotThisRun(_)) => (409, "text/plain", format!("{e}\n")),
        Err(e @ Refused::Api(_)) => {
            tracing::warn!(pod = %part.worker, job = %part.job, namespace = %part.namespace, error = %e, "storing a plan piece failed");
            (503, "text/plain", format!("{e}: ask again\n"))
        }
    }
}

/// A standby's answer to a claims message: the leader's own (which authenticates it), or "ask
/// again" (503) when no leader is known or reachable, or when the message was passed on already.
async fn pass_on(leadership: &Leadership, req: &Request) -> (u16, &'static str, String) {
    let again = |why: String| {
        (
            503,
            "text/plain",
            format!("this operator replica stands by ({why}): ask again\n"),
        )
    };
    if req.passed_on {
        return again("the message was passed on to it, not to the leader".into());
    }
    let Some(addr) = leadership.leader() else {
        return again("no leader known yet".into());
    };
    match tokio::time::timeout(PASS_ON_TIMEOUT, send_on(&addr, req)).await {
        Ok(Ok((code, body))) => {
            let ctype = if code == 200 {
                "application/json"
            } else {
                "text/plain"
            };
            (code, ctype, body)
        }
        Ok(Err(e)) => again(format!("passing it on to the leader at {addr}: {e}")),
        Err(_) => again(format!(
            "no answer from the leader at {addr} in {PASS_ON_TIMEOUT:?}"
        )),
    }
}

/// Sends `req` to `addr` as a worker would, marked [`PASSED_ON`]; returns the status and body.
async fn send_on(addr: &str, req: &Request) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    let auth = req
        .authorization
        .as_deref()
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}{PASSED_ON}: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        req.path,
        req.body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&req.body).await?;
    let mut answer = Vec::new();
    (&mut sock)
        .take(MAX_BODY as u64)
        .read_to_end(&mut answer)
        .await?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("an answer without a head"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("an answer without a status"))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_probes_and_metrics_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(Health::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            health.clone(),
            None,
            async {
                let _ = rx.await;
            },
        ));
        async fn get(addr: SocketAddr, path: &str) -> String {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.ready.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get(addr, "/metrics")
                .await
                .contains("vfxt_ingest_reconciles_total 0")
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        server.await.unwrap();
    }

    /// The API server's TokenReview of two tokens of namespace `n`: "good", bound to the copy pod
    /// `j-r1-copy-0-a`, and "scan", bound to the scan pod `j-r1-scan-b`; the operator's own rules
    /// ([`crate::token::check`]) on its answer.
    struct TwoTokens;
    impl Authenticator for TwoTokens {
        fn authorize<'a>(
            &'a self,
            token: &'a str,
            msg: crate::token::Sender<'a>,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send + 'a>> {
            use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
            let pod = match token {
                "good" => Some("j-r1-copy-0-a"),
                "scan" => Some("j-r1-scan-b"),
                _ => None,
            };
            let review = TokenReviewStatus {
                authenticated: Some(pod.is_some()),
                error: pod.is_none().then(|| "token refused".into()),
                user: pod.map(|p| UserInfo {
                    username: Some("system:serviceaccount:n:j-workers".into()),
                    extra: Some(
                        [(crate::token::POD_NAME_EXTRA.to_owned(), vec![p.to_owned()])].into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            };
            Box::pin(async move { crate::token::check(&review, msg) })
        }
    }

    /// Keeps the plan pieces it is given, and answers as the API server would for a job whose
    /// plan is not committed yet.
    #[derive(Default)]
    struct Pieces(std::sync::Mutex<Vec<PlanPart>>);
    impl PlanWriter for Pieces {
        fn store<'a>(
            &'a self,
            part: &'a PlanPart,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<Saved, Refused>> + Send + 'a>>
        {
            self.0.lock().unwrap().push(part.clone());
            Box::pin(async { Ok(Saved::Stored) })
        }
    }

    /// A claims endpoint on a free port, for `leadership`: its address, the sender that stops it,
    /// and its task.
    async fn serving(
        registry: Arc<Registry>,
        leadership: Leadership,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        serving_plans(registry, leadership, Arc::default()).await
    }

    /// [`serving`], storing plan pieces in `plans`.
    async fn serving_plans(
        registry: Arc<Registry>,
        leadership: Leadership,
        plans: Arc<Pieces>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Metrics::default()),
            Arc::new(Health::default()),
            Some(Arc::new(Claims {
                registry,
                auth: Arc::new(TwoTokens),
                plans,
                leadership: Arc::new(leadership),
            })),
            async {
                let _ = rx.await;
            },
        ));
        (addr, tx, server)
    }

    /// A claims message as a worker sends it, with `headers` (lines ending in CRLF) added.
    async fn post_with(addr: SocketAddr, headers: &str, token: Option<&str>, body: &str) -> String {
        post_to(addr, ingest_api::claims::PATH, headers, token, body).await
    }

    /// A message to `path` as a pod sends it.
    async fn post_to(
        addr: SocketAddr,
        path: &str,
        headers: &str,
        token: Option<&str>,
        body: &str,
    ) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\n{headers}{auth}content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn post(addr: SocketAddr, token: Option<&str>, body: &str) -> String {
        post_with(addr, "", token, body).await
    }

    #[tokio::test]
    async fn claims_are_served_to_an_authenticated_worker_and_refused_otherwise() {
        let registry = Arc::new(Registry::default());
        let ij: ingest_api::IngestJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "ingest.vfxt.dev/v1alpha1", "kind": "IngestJob",
            "metadata": {"name": "j", "namespace": "n", "uid": "u1"},
            "spec": {
                "run": 1,
                "source": {"pvc": {"claimName": "x"}},
                "destination": {"nfs": {"servers": ["10.0.0.1"], "path": "/nfs"}},
            }
        }))
        .unwrap();
        let (addr, tx, server) = serving(registry.clone(), Leadership::alone()).await;
        let msg = |worker: &str, room: u32| {
            serde_json::json!({"namespace": "n", "job": "j", "uid": "u1", "run": 1, "role": "copy",
                "worker": worker, "room": room})
            .to_string()
        };
        // Before the reconcile set the pass up: ask again.
        assert!(
            post(addr, Some("good"), &msg("j-r1-copy-0-a", 1))
                .await
                .starts_with("HTTP/1.1 503")
        );
        registry
            .ensure(&ij, "copy", 3, None, None, crate::claims::Opening::Now)
            .unwrap();
        let ok = post(addr, Some("good"), &msg("j-r1-copy-0-a", 2)).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        let r: ingest_api::claims::ClaimResponse = serde_json::from_str(body).unwrap();
        assert_eq!(r.shards, vec![0, 1]);
        assert!(
            post(addr, None, &msg("j-r1-copy-0-a", 1))
                .await
                .starts_with("HTTP/1.1 401")
        );
        let refused = post(addr, Some("bad"), &msg("j-r1-copy-0-a", 1)).await;
        assert!(
            refused.starts_with("HTTP/1.1 403") && refused.contains("token refused"),
            "{refused}"
        );
        assert!(
            post(addr, Some("good"), "{not json")
                .await
                .starts_with("HTTP/1.1 400")
        );
        // Refused messages took nothing: shard 2 is still there.
        let ok = post(addr, Some("good"), &msg("j-r1-copy-0-a", 5)).await;
        assert!(ok.ends_with(r#"{"shards":[2],"state":"work"}"#), "{ok}");

        // A standby replica passes messages on to the leader, whose answer (and authentication)
        // the worker gets; a message passed on once is not passed on again.
        let standby_at =
            |leader: Option<String>| serving(Arc::default(), Leadership::standby(leader));
        let (standby, stop, task) = standby_at(Some(addr.to_string())).await;
        let done = serde_json::json!({"namespace": "n", "job": "j", "uid": "u1", "run": 1, "role": "copy",
            "worker": "j-r1-copy-0-a", "room": 1, "done": [{"shard": 2, "result": {"files": 1, "bytes": 1}}]})
        .to_string();
        let passed = post(standby, Some("good"), &done).await;
        assert!(passed.starts_with("HTTP/1.1 200"), "{passed}");
        // (The standby's own registry has no pass: it would answer 503.)
        assert!(
            passed.ends_with(r#"{"shards":[],"state":"work"}"#),
            "{passed}"
        );
        assert!(
            post(standby, Some("bad"), &done)
                .await
                .starts_with("HTTP/1.1 403"),
            "the leader authenticates what a standby passes on"
        );
        let looped = post_with(
            standby,
            &format!("{PASSED_ON}: 1\r\n"),
            Some("good"),
            &msg("j-r1-copy-0-a", 1),
        )
        .await;
        assert!(
            looped.starts_with("HTTP/1.1 503") && looped.contains("passed on to it"),
            "{looped}"
        );
        stop.send(()).unwrap();
        task.await.unwrap();
        let (lost, stop, task) = standby_at(None).await;
        let unknown = post(lost, Some("good"), &done).await;
        assert!(
            unknown.starts_with("HTTP/1.1 503") && unknown.contains("no leader known"),
            "{unknown}"
        );
        stop.send(()).unwrap();
        task.await.unwrap();
        tx.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn plan_pieces_are_taken_from_the_runs_scan_pod_only() {
        let pieces = Arc::new(Pieces::default());
        let (addr, tx, server) =
            serving_plans(Arc::default(), Leadership::alone(), pieces.clone()).await;
        let owner = plan_store::Owner {
            namespace: "n".into(),
            name: "j".into(),
            uid: "u1".into(),
            run: 1,
        };
        let summary = plan_store::PlanSummary {
            chunks: 2,
            shards: 3,
            ..Default::default()
        };
        let sent = plan_store::parts(
            &owner,
            "j-r1-scan-b",
            &["{\"a\":".into(), "1}".into()],
            &summary,
        );
        let body = |p: &PlanPart| serde_json::to_string(p).unwrap();
        let plan_at = |at: SocketAddr, token: Option<&'static str>, b: String| async move {
            post_to(at, ingest_api::claims::PLAN_PATH, "", token, &b).await
        };
        let plan = |token, b| plan_at(addr, token, b);
        // A worker's token, or none, or one the API server refuses: nothing is stored.
        for token in [Some("good"), None, Some("forged")] {
            let refused = plan(token, body(&sent[0])).await;
            assert!(
                refused.starts_with("HTTP/1.1 401") || refused.starts_with("HTTP/1.1 403"),
                "{token:?}: {refused}"
            );
        }
        // The scan's token for a piece that says it is from a copy pod: refused.
        let mut other = sent[0].clone();
        other.worker = "j-r1-copy-0-a".into();
        let refused = plan(Some("scan"), body(&other)).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        assert!(pieces.0.lock().unwrap().is_empty());
        assert!(
            plan(Some("scan"), "{not json".into())
                .await
                .starts_with("HTTP/1.1 400")
        );
        // The scan's own pieces, in order, chunk 0 (the summary) last.
        for p in &sent {
            let ok = plan(Some("scan"), body(p)).await;
            assert!(
                ok.starts_with("HTTP/1.1 200") && ok.ends_with(r#""stored""#),
                "{ok}"
            );
        }
        assert_eq!(*pieces.0.lock().unwrap(), sent);
        assert_eq!(sent.last().unwrap().summary.as_ref(), Some(&summary));
        // A standby passes a piece on to the leader, which authenticates and stores it.
        let (standby, stop, task) =
            serving(Arc::default(), Leadership::standby(Some(addr.to_string()))).await;
        let passed = plan_at(standby, Some("scan"), body(&sent[0])).await;
        assert!(passed.starts_with("HTTP/1.1 200"), "{passed}");
        assert_eq!(pieces.0.lock().unwrap().len(), sent.len() + 1);
        let refused = plan_at(standby, Some("good"), body(&sent[0])).await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
        stop.send(()).unwrap();
        task.await.unwrap();
        tx.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn replicas_on_one_network_share_the_port() {
        let a = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = a.local_addr().unwrap();
        let b = bind(port).await;
        assert!(b.is_ok(), "a second replica binds the same port: {b:?}");
        // A port held by a program without SO_REUSEPORT is still refused, naming it.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = other.local_addr().unwrap();
        let e = bind(taken).await.unwrap_err().to_string();
        assert!(e.contains(&taken.to_string()), "{e}");
    }
}
