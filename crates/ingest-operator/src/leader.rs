//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never reconcile at once.
//! Writes use the Lease's resourceVersion: of two replicas racing for an expired Lease, one gets 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{Error, Result};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease (the operator's).
    pub namespace: String,
    /// This replica (pod name).
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
}

/// What to do with a Lease as it is now (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Take,
    /// Someone else holds it: wait.
    Wait,
}

/// Decides from the Lease's holder and renew time.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) => {
            let dur =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|t| t.0.checked_add(dur).is_ok_and(|end| end < now));
            if expired {
                Decision::Take
            } else {
                Decision::Wait
            }
        }
    }
}

fn spec_for(cfg: &LeaseConfig, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One election step: returns true when this replica holds the Lease afterwards.
pub async fn try_acquire_or_renew(client: &Client, cfg: &LeaseConfig) -> Result<bool> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let current = api
        .get_opt(&cfg.name)
        .await
        .map_err(|e| Error::kube("read leader Lease", e))?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec_for(cfg, None, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("create leader Lease", e)),
        };
    };
    match decide(lease.spec.as_ref(), &cfg.identity, now) {
        Decision::Wait => Ok(false),
        Decision::Renew | Decision::Take => {
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            // replace carries metadata.resourceVersion: a concurrent writer makes this fail with 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube("update leader Lease", e)),
            }
        }
    }
}

/// Gives the Lease up on a graceful stop (holder cleared), so another replica takes over at its next attempt
/// instead of waiting for the Lease to expire. Best effort: a failure only delays the takeover.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease
        .spec
        .as_mut()
        .filter(|s| s.holder_identity.as_deref() == Some(cfg.identity.as_str()))
    else {
        return;
    };
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
        tracing::warn!(error = %e, "releasing the leader Lease failed; the next leader waits for it to expire");
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) -> Result<()> {
    loop {
        match try_acquire_or_renew(client, cfg).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

/// Renews forever; returns [`Error::LostLease`] when another replica took the Lease or renewals kept failing
/// for a whole lease duration (then another replica may already lead, so this one must stop).
pub async fn hold(client: &Client, cfg: &LeaseConfig) -> Error {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.renew_every).await;
        match try_acquire_or_renew(client, cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return Error::LostLease(cfg.name.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                if last_ok.elapsed() >= cfg.duration {
                    return Error::LostLease(cfg.name.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn held_by(who: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(who.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(100)), Decision::Take);
        assert_eq!(
            decide(Some(&held_by("a", 99)), "a", at(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", at(100)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&held_by("b", 80)), "a", at(100)),
            Decision::Take,
            "expired 5 s ago"
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_acquire_time() {
        let cfg = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let mut prev = held_by("b", 10);
        prev.lease_transitions = Some(2);
        let taken = spec_for(&cfg, Some(&prev), at(100));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = spec_for(&cfg, Some(&taken), at(105));
        assert_eq!(
            (renewed.lease_transitions, renewed.acquire_time),
            (Some(3), Some(MicroTime(at(100))))
        );
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));
    }
}
