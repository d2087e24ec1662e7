//! Who may talk to the claims endpoint: a worker pod of the IngestJob it names, proven by its
//! service-account token. The token is projected into the pod with audience
//! [`ingest_api::claims::TOKEN_AUDIENCE`] and bound to the pod, so the API server's TokenReview
//! says which pod holds it ([`POD_NAME_EXTRA`]). The rules are pure ([`check`]); the review is
//! cached for [`CACHE_FOR`], so 500 workers cost at most 500 TokenReviews a minute, and none of
//! their claims touch the API server otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ingest_api::claims::{ClaimRequest, TOKEN_AUDIENCE};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};

/// The user info extra key the API server sets for a pod-bound token.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// How long a review is trusted.
pub const CACHE_FOR: Duration = Duration::from_secs(60);

/// Who a message says it comes from: a pod of one pass of one IngestJob's run. A worker's claims
/// message names its pass (`role`: copy, verify, prune); the scan's plan pieces are from the
/// pass `scan` by the endpoint they go to, whatever they say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender<'a> {
    /// The IngestJob's namespace.
    pub namespace: &'a str,
    /// The IngestJob's name.
    pub job: &'a str,
    /// Its `spec.run`.
    pub run: i64,
    /// The pass: the Job whose pod the sender must be.
    pub role: &'a str,
    /// The sender's pod name.
    pub worker: &'a str,
}

impl<'a> From<&'a ClaimRequest> for Sender<'a> {
    fn from(m: &'a ClaimRequest) -> Self {
        Sender {
            namespace: &m.namespace,
            job: &m.job,
            run: m.run,
            role: &m.role,
            worker: &m.worker,
        }
    }
}

/// Decides whether `token` may speak for `msg`'s sender.
pub trait Authenticator: Send + Sync {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        msg: Sender<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The rules (pure): the API server authenticated the token for our audience, it belongs to a
/// service account of the IngestJob's namespace, it is bound to the pod the message comes from,
/// and that pod is one of the pass it names (its name starts with the pass's Job name).
pub fn check(review: &TokenReviewStatus, msg: Sender<'_>) -> Result<(), String> {
    if review.authenticated != Some(true) {
        return Err(format!(
            "the token was not accepted by the API server{}",
            review
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(aud) = &review.audiences
        && !aud.iter().any(|a| a == TOKEN_AUDIENCE)
    {
        return Err(format!("the token is not for audience {TOKEN_AUDIENCE}"));
    }
    let user = review.user.as_ref().ok_or("the review names no user")?;
    let name = user.username.as_deref().unwrap_or_default();
    let ns = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .map(|(ns, _)| ns)
        .ok_or_else(|| format!("{name:?} is not a service account"))?;
    if ns != msg.namespace {
        return Err(format!(
            "service account {name:?} is not of namespace {:?}, the IngestJob's",
            msg.namespace
        ));
    }
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .and_then(|v| v.first())
        .ok_or("the token is not bound to a pod (use the projected token the operator mounts)")?;
    if pod != msg.worker {
        return Err(format!(
            "the token is bound to pod {pod:?}, the message says {:?}",
            msg.worker
        ));
    }
    let job = crate::names::pass_job(msg.job, msg.run, msg.role);
    if !pod.starts_with(&format!("{job}-")) {
        return Err(format!("pod {pod:?} is not a pod of Job {job}"));
    }
    Ok(())
}

/// [`check`] on the API server's TokenReview, cached.
pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<String, (TokenReviewStatus, Instant)>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        TokenReviewer {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Result<TokenReviewStatus, String> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((st, at)) = cache.get(token)
                && at.elapsed() < CACHE_FOR
            {
                return Ok(st.clone());
            }
        }
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let tr = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![TOKEN_AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let st = api
            .create(&PostParams::default(), &tr)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?
            .status
            .unwrap_or_default();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_FOR);
        }
        cache.insert(token.to_owned(), (st.clone(), Instant::now()));
        Ok(st)
    }
}

impl Authenticator for TokenReviewer {
    fn authorize<'a>(
        &'a self,
        token: &'a str,
        msg: Sender<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move { check(&self.review(token).await?, msg) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn review(user: &str, pod: Option<&str>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec![TOKEN_AUDIENCE.into()]),
            user: Some(UserInfo {
                username: Some(user.into()),
                extra: pod.map(|p| [(POD_NAME_EXTRA.to_owned(), vec![p.to_owned()])].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn msg(worker: &str) -> ClaimRequest {
        ClaimRequest {
            namespace: "team".into(),
            job: "t3".into(),
            run: 1,
            role: "copy".into(),
            worker: worker.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_worker_of_the_pass_with_its_own_bound_token_is_let_in() {
        let ok = review(
            "system:serviceaccount:team:t3-pods",
            Some("t3-r1-copy-0-x7k"),
        );
        assert_eq!(check(&ok, (&msg("t3-r1-copy-0-x7k")).into()), Ok(()));
        // The scan, by its own pass (the plan's endpoint gives it).
        let scan_msg = msg("t3-r1-scan-q2x");
        let scan = Sender {
            role: "scan",
            ..(&scan_msg).into()
        };
        let scan_token = review("system:serviceaccount:team:t3-pods", Some("t3-r1-scan-q2x"));
        assert_eq!(check(&scan_token, scan), Ok(()));
        // A worker's token does not speak for the scan, nor the scan's for a worker.
        let copy_as_scan = Sender {
            worker: "t3-r1-copy-0-x7k",
            ..scan
        };
        assert!(
            check(&ok, copy_as_scan)
                .unwrap_err()
                .contains("not a pod of")
        );
        assert!(
            check(&scan_token, (&scan_msg).into())
                .unwrap_err()
                .contains("not a pod of")
        );
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        let cases = [
            (
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some("token expired".into()),
                    ..Default::default()
                },
                "t3-r1-copy-0-a",
                "token expired",
            ),
            (
                review("system:serviceaccount:other:x", Some("t3-r1-copy-0-a")),
                "t3-r1-copy-0-a",
                "namespace",
            ),
            (
                review("alice", Some("t3-r1-copy-0-a")),
                "t3-r1-copy-0-a",
                "not a service account",
            ),
            (
                review("system:serviceaccount:team:t3-pods", None),
                "t3-r1-copy-0-a",
                "not bound to a pod",
            ),
            (
                review("system:serviceaccount:team:t3-pods", Some("t3-r1-copy-0-b")),
                "t3-r1-copy-0-a",
                "bound to pod",
            ),
            (
                review("system:serviceaccount:team:t3-pods", Some("t3-r1-scan-a")),
                "t3-r1-scan-a",
                "not a pod of",
            ),
            (
                review("system:serviceaccount:team:t3-pods", Some("t3-r2-copy-0-a")),
                "t3-r2-copy-0-a",
                "not a pod of",
            ),
        ];
        for (r, worker, why) in cases {
            let e = check(&r, (&msg(worker)).into()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        let mut other_aud = review("system:serviceaccount:team:t3-pods", Some("t3-r1-copy-0-a"));
        other_aud.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        assert!(
            check(&other_aud, (&msg("t3-r1-copy-0-a")).into())
                .unwrap_err()
                .contains("audience")
        );
    }
}
