//! Names shared by the operator, the worker/scan pods and the CLI. One place, so a label written by one side
//! is the label selected by the other.

/// API group of every vfxt-ingest resource.
pub const GROUP: &str = "ingest.vfxt.dev";
/// Served and stored version of `IngestJob`.
pub const VERSION: &str = "v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "IngestJob";
/// Field manager of every server-side apply the operator sends (objects and `/status`).
pub const FIELD_MANAGER: &str = "vfxt-ingest";
/// Name of the binary the pods run; the operator puts it first in every container's args.
pub const BINARY: &str = "vfxt-ingest";

/// Labels the operator sets on every child object. Children are found again by these labels (observe step),
/// so they are part of the contract and must not change between versions.
pub mod labels {
    /// Name of the owning IngestJob.
    pub const JOB: &str = "ingest.vfxt.dev/job";
    /// What the child does: one of the `ROLE_*` values.
    pub const ROLE: &str = "ingest.vfxt.dev/role";
    /// `spec.run` the child was created for; children of an older run are pruned.
    pub const RUN: &str = "ingest.vfxt.dev/run";
    /// Index of the destination server (position in `spec.destination.nfs.servers`) a copy/verify child uses.
    pub const SERVER_INDEX: &str = "ingest.vfxt.dev/server-index";
    /// Standard label naming the operator as the manager.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "vfxt-ingest";

    /// The scan Job and its pod.
    pub const ROLE_SCAN: &str = "scan";
    /// Copy Jobs and their worker pods.
    pub const ROLE_COPY: &str = "copy";
    /// Verify Jobs and their worker pods.
    pub const ROLE_VERIFY: &str = "verify";
    /// `spec.mode: Mirror`: the Jobs and worker pods that delete what only the destination has,
    /// between copy and verify.
    pub const ROLE_PRUNE: &str = "prune";
    /// ConfigMaps holding plan chunks.
    pub const ROLE_PLAN: &str = "plan";
    /// Per-server PersistentVolumes/Claims (only when mount options are given).
    pub const ROLE_VOLUME: &str = "volume";
}

/// Annotations written by pods and read by the operator.
pub mod annotations {
    /// Small JSON progress document ([`crate::report::PodProgress`]) a worker or scan pod writes on its own pod.
    pub const PROGRESS: &str = "ingest.vfxt.dev/progress";
    /// Destination server a copy/verify Job targets (the IP or name itself, for humans and for status).
    pub const SERVER: &str = "ingest.vfxt.dev/server";
    /// Full name of the owning IngestJob on every pod (the `job` label may be shortened to 63 characters).
    pub const INGEST_JOB: &str = "ingest.vfxt.dev/ingestjob";
    /// Number of plan chunk ConfigMaps, written on chunk 0 once all chunks are stored (commit marker).
    pub const PLAN_CHUNKS: &str = "ingest.vfxt.dev/plan-chunks";
}

/// Condition types, kstatus-compatible: `Ready` is the normal-true condition, `Reconciling` and `Stalled` are
/// abnormal-true conditions (absent or False when all is well).
pub mod conditions {
    /// True once the requested run finished successfully.
    pub const READY: &str = "Ready";
    /// True while the operator still works towards the requested state.
    pub const RECONCILING: &str = "Reconciling";
    /// True when progress is impossible without a user change (invalid spec, failed run).
    pub const STALLED: &str = "Stalled";
    /// True while the operator's calls to the Kubernetes API fail (reason `ApiError`, the message names the
    /// call and the error); removed by the next reconcile that succeeds. kstatus ignores it.
    pub const DEGRADED: &str = "Degraded";
    /// True while every destination server answers; False (reason `ServerUnresponsive`, the
    /// message names them) once a worker found one hung: its work went to the others and no
    /// worker uses it again in this run. kstatus ignores it.
    pub const SERVERS_RESPONDING: &str = "ServersResponding";
    /// Value of `status` for a condition that holds.
    pub const TRUE: &str = "True";
    /// Value of `status` for a condition that does not hold.
    pub const FALSE: &str = "False";
}

/// Reasons used in conditions and Events (CamelCase, as Kubernetes expects).
pub mod reasons {
    use ingest_job::Reason;

    /// Spec failed validation.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The admin policy does not allow the IngestJob (the message names the rule).
    pub const POLICY_DENIED: &str = "PolicyDenied";
    /// The scan Job is running.
    pub const SCANNING: &str = "Scanning";
    /// Copy Jobs are running.
    pub const COPYING: &str = "Copying";
    /// Verify Jobs are running.
    pub const VERIFYING: &str = "Verifying";
    /// Waiting for children to be created or scheduled.
    pub const PENDING: &str = "Pending";
    /// The run finished, every file copied and verified.
    pub const SUCCEEDED: &str = Reason::Succeeded.as_str();
    /// The run finished within the failure policy, with some files failed.
    pub const SUCCEEDED_WITH_FAILURES: &str = Reason::SucceededWithFailures.as_str();
    /// The scan failed after its retries.
    pub const SCAN_FAILED: &str = "ScanFailed";
    /// A shard ended without a result after its retries (copy or verify), or a pass was stopped.
    pub const SHARD_FAILED: &str = Reason::ShardFailed.as_str();
    /// More files failed than the failure policy allows.
    pub const TOO_MANY_FAILURES: &str = Reason::TooManyFailures.as_str();
    /// The verify pass found entries only in the destination (nothing is deleted).
    pub const DESTINATION_DIFFERS: &str = Reason::DestinationDiffers.as_str();
    /// Nothing was copied or checked for `spec.stallTimeoutSeconds` (the `Stalled` condition's reason while
    /// the run still goes on, and a Warning Event).
    pub const NO_PROGRESS: &str = "NoProgress";
    /// A destination server stopped answering (condition `ServersResponding` and a Warning Event).
    pub const SERVER_UNRESPONSIVE: &str = "ServerUnresponsive";
    /// Every destination server answers (condition `ServersResponding`).
    pub const ALL_RESPONDING: &str = "AllResponding";
    /// `spec.suspend` holds the run (Ready and Reconciling False).
    pub const SUSPENDED: &str = "Suspended";
    /// The phase changed (Event reason).
    pub const PHASE_CHANGED: &str = "PhaseChanged";
    /// An API call failed; the operator retries with backoff.
    pub const API_ERROR: &str = "ApiError";
}
