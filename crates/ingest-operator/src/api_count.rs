//! Counts the operator's requests to the Kubernetes API server, by verb and resource, for
//! `/metrics` (`vfxt_ingest_api_requests_total`): the figure that says what the operator costs the
//! cluster's control plane (issue 13 measures it at 100 and 500 workers). A tower layer on the
//! client: every request passes through it once (a watch counts once, when it starts).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower::{Layer, Service};

/// Requests by (verb, resource).
#[derive(Debug, Default)]
pub struct ApiCounts(Mutex<BTreeMap<(String, String), u64>>);

impl ApiCounts {
    pub(crate) fn count(&self, method: &http::Method, uri: &http::Uri) {
        let key = classify(method, uri.path(), uri.query().unwrap_or(""));
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Every (verb, resource) seen, with its count.
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The verb (as the API server's audit log names it: get, list, watch, create, update, patch,
/// delete) and the resource (with its subresource: `ingestjobs/status`) of a request.
pub fn classify(method: &http::Method, path: &str, query: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or(&[]),
        Some(&"apis") => parts.get(3..).unwrap_or(&[]),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        r => r,
    };
    let (resource, named) = match rest {
        [] => (path.to_owned(), false),
        [r] => ((*r).to_owned(), false),
        [r, _name] => ((*r).to_owned(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb.to_owned(), resource)
}

/// The layer that counts into an [`ApiCounts`].
#[derive(Clone, Debug)]
pub struct CountLayer(pub Arc<ApiCounts>);

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counts: self.0.clone(),
        }
    }
}

/// A service that counts each request, then passes it on unchanged.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    counts: Arc<ApiCounts>,
}

impl<S, B> Service<http::Request<B>> for Counted<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.counts.count(req.method(), req.uri());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_are_named_as_the_audit_log_names_them() {
        let c = |m: Method, p: &str, q: &str| {
            let (v, r) = classify(&m, p, q);
            format!("{v} {r}")
        };
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/pods", "labelSelector=x"),
            "list pods"
        );
        assert_eq!(
            c(Method::GET, "/api/v1/pods", "watch=true&resourceVersion=1"),
            "watch pods"
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/pods/p", ""),
            "get pods"
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/ingest.vfxt.dev/v1alpha1/namespaces/a/ingestjobs/j/status",
                "fieldManager=x"
            ),
            "patch ingestjobs/status"
        );
        assert_eq!(
            c(
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                ""
            ),
            "create tokenreviews"
        );
        assert_eq!(
            c(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
                ""
            ),
            "update leases"
        );
        assert_eq!(
            c(Method::DELETE, "/apis/batch/v1/namespaces/a/jobs/j", ""),
            "delete jobs"
        );
        assert_eq!(c(Method::GET, "/version", ""), "list /version");
    }

    /// Answers every request at once.
    struct Answer;
    impl Service<http::Request<()>> for Answer {
        type Response = u16;
        type Error = ();
        type Future = std::future::Ready<Result<u16, ()>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(200))
        }
    }

    #[test]
    fn the_layer_counts_each_request_once_and_passes_it_on() {
        let counts = Arc::new(ApiCounts::default());
        let mut svc = CountLayer(counts.clone()).layer(Answer);
        let req = |m: Method, u: &str| http::Request::builder().method(m).uri(u).body(()).unwrap();
        for r in [
            req(Method::GET, "/api/v1/namespaces/a/pods"),
            req(Method::GET, "/api/v1/namespaces/a/pods"),
            req(Method::POST, "/apis/authentication.k8s.io/v1/tokenreviews"),
        ] {
            let answer = futures::executor::block_on(svc.call(r));
            assert_eq!(answer, Ok(200));
        }
        let s = counts.snapshot();
        assert_eq!(s[&("list".to_owned(), "pods".to_owned())], 2);
        assert_eq!(s[&("create".to_owned(), "tokenreviews".to_owned())], 1);
        assert_eq!(s.len(), 2);
    }
}
