//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas never reconcile at once.
//! Writes use the Lease's resourceVersion: of two replicas racing for an expired Lease, one gets 409 Conflict.
//!
//! The holder also writes where it serves claims ([`CLAIMS_ADDRESS_ANNOTATION`]) on the Lease. The
//! claims Service sends a worker's message to any ready replica, and the passes live in the
//! leader's memory: a standby passes each message on to that address ([`Leadership`]) instead of
//! answering "ask again", so a worker's heartbeat is not lost to a standby (with two replicas,
//! half of them would be, and a claim's lease could run out under a live worker).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Where this replica serves claims (`host:port`, the pod IP): written on the Lease while it
    /// holds it. None: standbys cannot pass claims on (they answer "ask again").
    pub address: Option<String>,
}

/// Annotation on the Lease: the holder's claims address.
pub const CLAIMS_ADDRESS_ANNOTATION: &str = "ingest.vfxt.dev/claims-address";

/// What this replica knows of the election, for the claims endpoint.
#[derive(Debug, Default)]
pub struct Leadership {
    leading: AtomicBool,
    leader: Mutex<Option<String>>,
}

impl Leadership {
    /// One replica without election: it always leads.
    pub fn alone() -> Self {
        let l = Leadership::default();
        l.leading.store(true, Ordering::Relaxed);
        l
    }

    /// A standby that knows the leader's claims address.
    pub fn standby(leader: Option<String>) -> Self {
        let l = Leadership::default();
        l.saw(&Step::Standby {
            leader,
            retry: None,
        });
        l
    }

    /// Whether this replica leads (its registry holds the passes).
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// The leader's claims address, when another replica leads and said where.
    pub fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn saw(&self, step: &Step) {
        let (leading, leader) = match step {
            Step::Holding => (true, None),
            Step::Standby { leader, .. } => (false, leader.clone()),
        };
        self.leading.store(leading, Ordering::Relaxed);
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
    }
}

/// The outcome of one election step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This replica holds the Lease.
    Holding,
    /// Another replica does (or won the race); `leader`: its claims address, if it said one;
    /// `retry`: when to try again ([`next_attempt`]).
    Standby {
        leader: Option<String>,
        retry: Option<Duration>,
    },
}

/// How long a standby waits before its next attempt: `every`, or less when the holder's Lease
/// runs out sooner (it is tried just after that), so a takeover comes as soon as the Lease
/// allows rather than up to one more period later (pure).
pub fn next_attempt(spec: Option<&LeaseSpec>, now: Timestamp, every: Duration) -> Duration {
    const AFTER_EXPIRY: Duration = Duration::from_millis(100);
    let expires = spec.and_then(|s| {
        let dur = SignedDuration::from_secs(i64::from(s.lease_duration_seconds.unwrap_or(15)));
        s.renew_time.as_ref()?.0.checked_add(dur).ok()
    });
    match expires {
        Some(end) => {
            let left = Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO);
            (left + AFTER_EXPIRY).min(every)
        }
        None => every,
    }
}

impl Step {
    pub fn held(&self) -> bool {
        *self == Step::Holding
    }
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

/// The Lease's metadata as this replica writes it: its claims address added (or an old holder's
/// removed).
fn metadata_for(cfg: &LeaseConfig, mut meta: ObjectMeta) -> ObjectMeta {
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    match &cfg.address {
        Some(a) => annotations.insert(CLAIMS_ADDRESS_ANNOTATION.into(), a.clone()),
        None => annotations.remove(CLAIMS_ADDRESS_ANNOTATION),
    };
    meta
}

/// One election step: whether this replica holds the Lease afterwards, and if not, where the
/// holder serves claims.
pub async fn try_acquire_or_renew(client: &Client, cfg: &LeaseConfig) -> Result<Step> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let now = Timestamp::now();
    let current = api
        .get_opt(&cfg.name)
        .await
        .map_err(|e| Error::kube("read leader Lease", e))?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: metadata_for(
                cfg,
                ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
            ),
            spec: Some(spec_for(cfg, None, now)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Step::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Step::Standby {
                leader: None,
                retry: None,
            }),
            Err(e) => Err(Error::kube("create leader Lease", e)),
        };
    };
    match decide(lease.spec.as_ref(), &cfg.identity, now) {
        Decision::Wait => Ok(Step::Standby {
            leader: holder_address(&lease),
            retry: Some(next_attempt(lease.spec.as_ref(), now, cfg.renew_every)),
        }),
        Decision::Renew | Decision::Take => {
            lease.spec = Some(spec_for(cfg, lease.spec.as_ref(), now));
            lease.metadata = metadata_for(cfg, lease.metadata);
            // replace carries metadata.resourceVersion: a concurrent writer makes this fail with 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Step::Holding),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Step::Standby {
                    leader: None,
                    retry: None,
                }),
                Err(e) => Err(Error::kube("update leader Lease", e)),
            }
        }
    }
}

/// The claims address the Lease's holder wrote.
pub fn holder_address(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(CLAIMS_ADDRESS_ANNOTATION)
        .filter(|a| !a.is_empty())
        .cloned()
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

/// Waits until this replica holds the Lease, keeping `leadership` up to date meanwhile (the
/// leader's claims address, for passing claims on).
pub async fn acquire(client: &Client, cfg: &LeaseConfig, leadership: &Leadership) -> Result<()> {
    loop {
        match try_acquire_or_renew(client, cfg).await {
            Ok(step) => {
                leadership.saw(&step);
                match step {
                    Step::Holding => return Ok(()),
                    Step::Standby { retry, .. } => {
                        tokio::time::sleep(retry.unwrap_or(cfg.renew_every)).await;
                        continue;
                    }
                }
            }
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
            Ok(Step::Holding) => last_ok = tokio::time::Instant::now(),
            Ok(Step::Standby { .. }) => return Error::LostLease(cfg.name.clone()),
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
    fn a_standby_tries_again_just_after_the_lease_runs_out() {
        let every = Duration::from_secs(5);
        // Renewed at 100, 15 s: runs out at 115.
        let held = held_by("b", 100);
        assert_eq!(next_attempt(Some(&held), at(101), every), every);
        assert_eq!(
            next_attempt(Some(&held), at(112), every),
            Duration::from_millis(3100)
        );
        assert_eq!(
            next_attempt(Some(&held), at(120), every),
            Duration::from_millis(100),
            "already out: at once"
        );
        assert_eq!(next_attempt(None, at(120), every), every);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_acquire_time() {
        let cfg = LeaseConfig {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            address: None,
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
