//! `vfxt-ingest scan --cluster`: the scan pod's side of the operator contract, the real binary
//! against the operator's real HTTP endpoint (`ingest_operator::http::serve` on 127.0.0.1) with
//! the operator's own token rules; only the API server behind it is replaced: a writer that keeps
//! the plan pieces it is given and answers as told. Real trees; every wait is for a process exit.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use ingest_api::report::PodResult;
use ingest_operator::http::{self, Claims, Health, PlanWriter};
use ingest_operator::leader::Leadership;
use ingest_operator::metrics::Metrics;
use ingest_operator::plan_store::{PlanPart, PlanSummary, Refused, Saved};
use ingest_operator::token::{self, Authenticator, Sender};
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

const TOKEN: &str = "the-scan-pods-token";
const POD: &str = "ij-r3-scan-x7k2p";

/// The API server's TokenReview of [`TOKEN`] (bound to [`POD`] in namespace `ns`), judged by the
/// operator's rules.
struct ScanToken;
impl Authenticator for ScanToken {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        msg: Sender<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        let known = token == TOKEN;
        let review = TokenReviewStatus {
            authenticated: Some(known),
            error: (!known).then(|| "token not recognized".into()),
            user: known.then(|| UserInfo {
                username: Some("system:serviceaccount:ns:ij-workers".into()),
                extra: Some([(token::POD_NAME_EXTRA.to_owned(), vec![POD.to_owned()])].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        Box::pin(async move { token::check(&review, msg) })
    }
}

/// Keeps every piece it is given; answers each with the next of `answers` (stored once they run out).
#[derive(Default)]
struct Pieces {
    got: Mutex<Vec<PlanPart>>,
    answers: Mutex<VecDeque<Result<Saved, Refused>>>,
}
impl PlanWriter for Pieces {
    fn store<'a>(
        &'a self,
        part: &'a PlanPart,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Saved, Refused>> + Send + 'a>> {
        self.got.lock().unwrap().push(part.clone());
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Saved::Stored));
        Box::pin(async move { answer })
    }
}

/// The operator's endpoint on a loopback port, for as long as the runtime lives.
fn operator(pieces: Arc<Pieces>) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(http::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(http::serve(
        listener,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        Some(Arc::new(Claims {
            registry: Arc::default(),
            auth: Arc::new(ScanToken),
            plans: pieces,
            leadership: Arc::new(Leadership::alone()),
        })),
        std::future::pending(),
    ));
    (rt, url)
}

/// A tree of 3 directories of 5 files each.
fn tree(root: &Path) {
    for d in 0..3 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            std::fs::write(dir.join(format!("f{f}")), format!("{d}/{f}\n")).unwrap();
        }
    }
}

/// `vfxt-ingest scan --cluster` as the operator starts it, with `token` in its token file (none:
/// no file).
fn scan(dir: &Path, url: &str, token: Option<&str>) -> Output {
    let token_file = dir.join("token");
    if let Some(t) = token {
        std::fs::write(&token_file, t).unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_vfxt-ingest"))
        .arg("scan")
        .arg(dir.join("src"))
        .args(["--cluster", "--claims-url", url, "--token-file"])
        .arg(&token_file)
        .arg("--result-file")
        .arg(dir.join("result"))
        .args([
            "--server",
            "10.0.0.1",
            "--server",
            "10.0.0.2",
            "--workers",
            "2",
        ])
        .env("POD_NAME", POD)
        .env("POD_NAMESPACE", "ns")
        .env("INGEST_JOB_NAME", "ij")
        .env("INGEST_JOB_UID", "uid-1")
        .env("INGEST_RUN", "3")
        .env("INGEST_PLAN_PREFIX", "ij-r3-plan")
        .output()
        .unwrap()
}

fn setup() -> (
    tempfile::TempDir,
    Arc<Pieces>,
    tokio::runtime::Runtime,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("src"));
    let pieces = Arc::new(Pieces::default());
    let (rt, url) = operator(pieces.clone());
    (dir, pieces, rt, url)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_scan_sends_its_plan_to_the_operator_chunk_zero_last_and_writes_its_result() {
    let (dir, pieces, _rt, url) = setup();
    let out = scan(dir.path(), &url, Some(TOKEN));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = pieces.got.lock().unwrap().clone();
    assert!(!got.is_empty());
    let n = got.len() as u32;
    // Every piece names the job, run and pod from the environment; chunk 0 last, with the summary.
    for (i, p) in got.iter().enumerate() {
        assert_eq!(
            (p.namespace.as_str(), p.job.as_str(), p.uid.as_str(), p.run),
            ("ns", "ij", "uid-1", 3)
        );
        assert_eq!((p.worker.as_str(), p.parts), (POD, n));
        assert_eq!(p.summary.is_some(), i + 1 == got.len(), "{i}");
    }
    assert_eq!(got.last().unwrap().part, 0);
    let summary: PlanSummary = got.last().unwrap().summary.clone().unwrap();
    assert_eq!((summary.chunks, summary.totals.files), (n, 15));
    // The pieces, in their order, are the plan the summary describes.
    let mut ordered = got.clone();
    ordered.sort_by_key(|p| p.part);
    let chunks: Vec<&str> = ordered.iter().map(|p| p.text.as_str()).collect();
    let plan = ingest_plan::format::Plan::from_chunks(&chunks).unwrap();
    assert_eq!(plan.shards.len() as u64, summary.shards);
    assert_eq!(
        summary.shards_per_server.iter().sum::<u64>(),
        summary.shards
    );
    let result: PodResult =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("result")).unwrap()).unwrap();
    assert_eq!(
        (result.files, result.shards),
        (15, Some(summary.shards)),
        "{}",
        text(&out)
    );
}

#[test]
fn a_plan_an_earlier_attempt_committed_stands_and_no_more_is_sent() {
    let (dir, pieces, _rt, url) = setup();
    let earlier = PlanSummary {
        chunks: 1,
        shards: 99,
        ..Default::default()
    };
    pieces
        .answers
        .lock()
        .unwrap()
        .push_back(Ok(Saved::Kept(Box::new(earlier))));
    let out = scan(dir.path(), &url, Some(TOKEN));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("it stands"),
        "{}",
        text(&out)
    );
    assert_eq!(pieces.got.lock().unwrap().len(), 1, "one piece, then stop");
}

#[test]
fn a_failing_api_server_is_asked_again_and_a_refused_token_ends_the_scan() {
    // The API server behind the operator fails once: the piece is sent again.
    let (dir, pieces, _rt, url) = setup();
    pieces.answers.lock().unwrap().push_back(Err(Refused::Api(
        ingest_operator::Error::MissingField("the API server is down"),
    )));
    let out = scan(dir.path(), &url, Some(TOKEN));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = pieces.got.lock().unwrap().clone();
    assert_eq!(got[0], got[1], "the same piece again");

    // A token the API server does not know: unusable input (exit 2), nothing stored.
    let (dir, pieces, _rt, url) = setup();
    let out = scan(dir.path(), &url, Some("a-token-of-another-pod"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        text(&out)
    );
    assert!(pieces.got.lock().unwrap().is_empty());
    assert!(!dir.path().join("result").exists());

    // No token at all: refused before the tree is read, naming the flag and the path.
    let (dir, pieces, _rt, url) = setup();
    let out = scan(dir.path(), &url, None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("token"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("files"),
        "{}",
        text(&out)
    );
    assert!(pieces.got.lock().unwrap().is_empty());
}
