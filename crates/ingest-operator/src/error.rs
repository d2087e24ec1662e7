//! One error type for the controller. Every error has a [`Category`], which picks the retry delay and labels the
//! error metric, so "what went wrong" and "what we do about it" are decided in one place.

use std::time::Duration;

use ingest_api::validate::SpecErrors;

/// Everything reconcile and the pod-side helpers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid; nothing happens until the user changes it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] SpecErrors),
    /// The admin policy (`--policy`) does not allow the IngestJob; nothing runs until the user or
    /// the admin changes something. The message names each rule broken.
    #[error("{0}")]
    PolicyDenied(String),
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object lacks a field it must have (e.g. a namespace on a namespaced object).
    #[error("{0}")]
    MissingField(&'static str),
    /// The stored plan is incomplete or unreadable.
    #[error("plan store {prefix}: {message}")]
    Plan {
        /// Name prefix of the plan ConfigMaps.
        prefix: String,
        /// What is wrong.
        message: String,
    },
    /// JSON (de)serialization of our own types failed.
    #[error("serialize {what}: {source}")]
    Serde {
        /// What was being (de)serialized.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A watch cache the reconcile reads (Jobs, Pods, plan ConfigMaps) has not had its first full list yet,
    /// or no controller of this operator watches the namespace: retried soon (the watch retries on its own).
    #[error(
        "the operator's watch cache of {0} has not listed them yet (its watch retries; a lasting error is in the operator's log)"
    )]
    CacheNotReady(String),
    /// Another replica holds the leader Lease.
    #[error("lost leadership of lease {0}")]
    LostLease(String),
    /// Binding the metrics/health port or similar local I/O.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Error classes, for metrics and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// User must fix the spec: no retry until the object changes.
    Invalid,
    /// Optimistic-concurrency conflict: retry soon.
    Conflict,
    /// Rate limited or server busy (429, 503, 504): back off longer.
    Throttled,
    /// Missing object or permission (404, 403): probably needs an operator fix; retry slowly.
    Forbidden,
    /// Other API errors (5xx, bad requests): retry with a medium delay.
    Api,
    /// Connection-level failures: retry soon, the API server may be restarting.
    Transport,
    /// Our own data (plan store, serialization) is inconsistent.
    Internal,
}

impl Category {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Invalid => "invalid",
            Category::Conflict => "conflict",
            Category::Throttled => "throttled",
            Category::Forbidden => "forbidden",
            Category::Api => "api",
            Category::Transport => "transport",
            Category::Internal => "internal",
        }
    }

    /// All categories, for rendering zero-valued metrics.
    pub const ALL: [Category; 7] = [
        Category::Invalid,
        Category::Conflict,
        Category::Throttled,
        Category::Forbidden,
        Category::Api,
        Category::Transport,
        Category::Internal,
    ];

    /// Delay before the next attempt after `attempt` consecutive failures (1-based), doubling up to a cap per
    /// category. `None`: do not requeue (wait for a change of the object).
    pub fn backoff(self, attempt: u32) -> Option<Duration> {
        let (base, cap) = match self {
            Category::Invalid => return None,
            Category::Conflict => (1, 10),
            Category::Transport => (2, 60),
            Category::Throttled => (10, 300),
            Category::Api | Category::Internal => (5, 300),
            Category::Forbidden => (30, 600),
        };
        let exp = attempt.saturating_sub(1).min(16);
        Some(Duration::from_secs((base << exp).min(cap)))
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) => Error::kube("add the IngestJob finalizer", e),
            F::RemoveFinalizer(e) => Error::kube("remove the IngestJob finalizer", e),
            F::UnnamedObject => Error::MissingField("IngestJob has no name"),
            F::InvalidFinalizer => {
                Error::MissingField("finalizer name is not a valid JSON pointer segment")
            }
        }
    }
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// The class of this error.
    pub fn category(&self) -> Category {
        match self {
            Error::InvalidSpec(_) | Error::PolicyDenied(_) => Category::Invalid,
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    409 => Category::Conflict,
                    429 | 503 | 504 => Category::Throttled,
                    401 | 403 | 404 => Category::Forbidden,
                    _ => Category::Api,
                },
                kube::Error::HyperError(_) | kube::Error::Service(_) => Category::Transport,
                _ => Category::Api,
            },
            Error::LostLease(_) => Category::Conflict,
            Error::Io { .. } | Error::CacheNotReady(_) => Category::Transport,
            Error::MissingField(_) | Error::Plan { .. } | Error::Serde { .. } => Category::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> Error {
        Error::kube(
            "test",
            kube::Error::Api(Box::new(Status::failure("x", "y").with_code(code))),
        )
    }

    #[test]
    fn api_codes_map_to_categories() {
        assert_eq!(api(409).category(), Category::Conflict);
        assert_eq!(api(429).category(), Category::Throttled);
        assert_eq!(api(403).category(), Category::Forbidden);
        assert_eq!(api(500).category(), Category::Api);
    }

    #[test]
    fn invalid_spec_never_requeues_and_others_grow_to_a_cap() {
        assert_eq!(Category::Invalid.backoff(1), None);
        assert_eq!(Category::Conflict.backoff(1), Some(Duration::from_secs(1)));
        assert_eq!(Category::Conflict.backoff(3), Some(Duration::from_secs(4)));
        assert_eq!(
            Category::Conflict.backoff(30),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            Category::Throttled.backoff(100),
            Some(Duration::from_secs(300))
        );
    }
}
