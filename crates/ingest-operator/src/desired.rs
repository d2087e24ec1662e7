//! Desired children (pure): from the IngestJob and its stage, every object the operator wants to exist, fully
//! specified for server-side apply. Objects of earlier stages stay in the set, so applying is idempotent and
//! never removes a running Job.

use std::collections::BTreeMap;

use ingest_api::constants::{BINARY, annotations, labels};
use ingest_api::job::WorkerTemplate;
use ingest_api::policy::{AdmissionPolicy, OperatorDefaults, Violation};
use ingest_api::{IngestJob, ThreadsPerWorker, VerifyMode};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, EnvVar, EnvVarSource, NFSVolumeSource,
    ObjectFieldSelector, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::defaults::merge_worker;
use crate::error::{Error, Result};
use crate::names;
use crate::pod::env;
use crate::stage::Stage;

/// Label on cluster-scoped PersistentVolumes naming the IngestJob's namespace (they cannot have an owner
/// reference to a namespaced object, so the finalizer finds them by labels).
pub const NAMESPACE_LABEL: &str = "ingest.vfxt.dev/namespace";
/// Where the source is mounted in every pod (read-only).
pub const SOURCE_MOUNT: &str = "/ingest/source";
/// Where destination server `i`'s export is mounted in worker pods: `/ingest/dest-<i>`.
pub const DEST_MOUNT: &str = "/ingest/dest";

/// The mount of destination server `i`.
pub fn dest_mount(i: usize) -> String {
    format!("{DEST_MOUNT}-{i}")
}

/// Which server a worker's destination names: [`dest_mount`] of it, or a path under it.
pub fn server_of_mount(mount: &str, servers: usize) -> Option<usize> {
    (0..servers).find(|&i| {
        mount
            .strip_prefix(&dest_mount(i))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}
/// Where `spec.report.pvc` is mounted in worker pods (read-write).
pub const REPORT_MOUNT: &str = "/ingest/report";

/// The `--report` file of a worker pod of `role` (`spec.report`; none without it): in the run's report
/// directory ([`ingest_api::ReportTarget::run_dir`]) under the claim's mount, or under the first destination
/// server the pod mounts (`servers`; every server shows the same export, and one found unresponsive is not
/// mounted: a report written under its mount point would stay in the container). Outside the copied tree,
/// which validation ensures. Named by role, by the pass's Job (`generation`: servers found unresponsive,
/// the `-x<n>` of its name) and by worker index, so that pods never share a file: the pods of a pass's
/// new Job run beside the first Job's, with the same indexes. A replacement pod of the same Job and
/// index writes the file its failed attempt did not finish.
pub fn report_file(
    ij: &IngestJob,
    role: &str,
    servers: &[(usize, &String)],
    generation: usize,
) -> Option<String> {
    let r = ij.spec.report.as_ref()?;
    let root = if r.pvc.is_some() {
        REPORT_MOUNT.to_owned()
    } else {
        dest_mount(servers.first().map_or(0, |(i, _)| *i))
    };
    let dir = r.run_dir(&ij.name_any(), ij.spec.run);
    let index = format!("$({})", env::COMPLETION_INDEX);
    let index = match names::generation_mark(generation) {
        None => index,
        Some(m) => format!("{m}-{index}"),
    };
    let file = ingest_api::report_file_name(role, &index);
    Some(format!("{root}/{dir}/{file}"))
}

/// Operator-wide settings that shape children.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image for pods when neither the spec nor `worker_defaults` names one (the operator's own image).
    pub default_image: String,
    /// `spec.worker` defaults for every IngestJob (`--worker-defaults`); see [`crate::defaults::merge_worker`].
    pub worker_defaults: WorkerTemplate,
    /// Where worker pods reach this operator's claims endpoint (`--claims-url`).
    pub claims_url: String,
    /// What IngestJobs may reach and run (`--policy`): checked before a run starts
    /// ([`Settings::policy_violations`]), and root pods' capabilities follow it.
    pub policy: AdmissionPolicy,
}

impl Settings {
    /// What the operator puts in where a job says nothing: the image and the pods' uid.
    pub fn operator_defaults(&self) -> OperatorDefaults {
        OperatorDefaults {
            image: self
                .worker_defaults
                .image
                .clone()
                .unwrap_or_else(|| self.default_image.clone()),
            uid: self
                .worker_defaults
                .security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .unwrap_or(0),
        }
    }

    /// The admin policy's rules that `ij` breaks in its namespace.
    pub fn policy_violations(&self, ij: &IngestJob) -> Vec<Violation> {
        self.policy
            .rules(&ij.namespace().unwrap_or_default())
            .check(&ij.spec, &self.operator_defaults())
    }
}

/// One object to apply.
#[derive(Clone, Debug)]
pub enum Child {
    /// Identity of the pods (with no API rights: they talk to the operator's endpoint).
    ServiceAccount(Box<ServiceAccount>),
    /// NFS volume with mount options for one destination server (cluster-scoped).
    Volume(Box<PersistentVolume>),
    /// Claim bound to that volume.
    Claim(Box<PersistentVolumeClaim>),
    /// The scan Job, or the copy or verify Job of a pass.
    Job(Box<Job>),
}

impl Child {
    /// Kind and name, for logs and errors.
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Child::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Child::Volume(o) => ("PersistentVolume", &o.metadata),
            Child::Claim(o) => ("PersistentVolumeClaim", &o.metadata),
            Child::Job(o) => ("Job", &o.metadata),
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or("?"))
    }

    /// When the child may be applied, as a tier: every child of a tier is applied at once, and a tier
    /// only after the one before it was. A Job after its pods' ServiceAccount (admission refuses a
    /// pod without it, and the Job controller backs off) and their volumes' claims.
    pub fn tier(&self) -> u8 {
        match self {
            Child::ServiceAccount(_) | Child::Volume(_) | Child::Claim(_) => 0,
            Child::Job(_) => 1,
        }
    }

    /// Serialized size in bytes (the API server's limit is about 1.5 MiB; etcd's 1 MiB per object is ours).
    pub fn encoded_len(&self) -> usize {
        let v = match self {
            Child::ServiceAccount(o) => serde_json::to_vec(o),
            Child::Volume(o) => serde_json::to_vec(o),
            Child::Claim(o) => serde_json::to_vec(o),
            Child::Job(o) => serde_json::to_vec(o),
        };
        v.map(|b| b.len()).unwrap_or(usize::MAX)
    }
}

/// All children the IngestJob should have in `stage`.
pub fn desired(ij: &IngestJob, stage: &Stage, settings: &Settings) -> Result<Vec<Child>> {
    let ns = ij
        .namespace()
        .ok_or(Error::MissingField("IngestJob has no namespace"))?;
    let owner = ij
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("IngestJob has no uid yet"))?;
    let meta = |name: String, role: &str, run: Option<i64>| ObjectMeta {
        name: Some(name),
        namespace: Some(ns.clone()),
        labels: Some(names::child_labels(ij, role, run)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let mut out = Vec::new();
    // The pods' settings: the IngestJob's own, completed by the operator-wide defaults.
    let worker = merge_worker(&ij.spec.worker, &settings.worker_defaults);

    if worker.service_account_name.is_none() {
        // One identity with no API rights. The scan, copy, verify and prune pods need no API
        // access at all: they talk to the operator's endpoint with a pod-bound token of their own
        // audience (the scan sends its plan, which the operator stores: `plan_store`; workers claim
        // and report), and workers read the plan from a mounted volume. Their service account has
        // no Role and mounts no API token.
        out.push(Child::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta(names::worker_identity(ij), "identity", None),
            automount_service_account_token: Some(false),
            ..Default::default()
        })));
    }

    let run = ij.spec.run;
    let retries = ij.spec.failure_policy.retries_per_shard as i32;
    let scan_args = scan_args(ij, settings);
    let mut scan_meta = meta(names::scan_job(ij, run), labels::ROLE_SCAN, Some(run));
    let workers = ij
        .spec
        .workers
        .unwrap_or(ij.spec.destination.nfs.servers.len() as u32);
    scan_meta.annotations = Some(BTreeMap::from([
        (
            crate::stage::WORKERS_ANNOTATION.to_owned(),
            workers.to_string(),
        ),
        (
            crate::stage::DRY_RUN_ANNOTATION.to_owned(),
            ij.spec.dry_run.to_string(),
        ),
        (
            crate::stage::MODE_ANNOTATION.to_owned(),
            format!("{:?}", ij.spec.mode),
        ),
    ]));
    scan_meta
        .annotations
        .get_or_insert_default()
        .extend(spec_annotations(ij));
    out.push(Child::Job(Box::new(Job {
        metadata: scan_meta,
        spec: Some(JobSpec {
            backoff_limit: Some(retries),
            completions: Some(1),
            parallelism: Some(1),
            pod_failure_policy: Some(pod_failure_policy(labels::ROLE_SCAN)),
            template: pod_template(ij, &worker, labels::ROLE_SCAN, scan_args, None, settings),
            ..Default::default()
        }),
        status: None,
    })));

    let Some((plan, layout)) = stage.plan() else {
        return Ok(out);
    };
    let plan_chunks = plan.chunks;

    let mount_options = ij
        .spec
        .destination
        .nfs
        .mount_options
        .as_ref()
        .filter(|o| !o.is_empty());
    if let Some(opts) = mount_options {
        for (i, server) in layout.servers.iter().enumerate() {
            let (pv, pvc) = destination_volume(
                ij,
                &ns,
                i,
                server,
                opts,
                meta(names::dest_claim(ij, i), labels::ROLE_VOLUME, None),
            );
            out.push(Child::Volume(Box::new(pv)));
            out.push(Child::Claim(Box::new(pvc)));
        }
    }

    for role in stage.roles().iter().filter(|r| **r != labels::ROLE_SCAN) {
        let mut m = meta(layout.job_name(ij, run, role), role, Some(run));
        m.annotations = Some(spec_annotations(ij).into_iter().collect());
        let servers: Vec<(usize, &String)> = layout.mounted(role).collect();
        let template = pod_template(
            ij,
            &worker,
            role,
            worker_args(ij, role, &servers, settings, layout),
            Some(WorkerMounts {
                servers: &servers,
                plan_chunks,
            }),
            settings,
        );
        let workers = layout.workers as i32;
        out.push(Child::Job(Box::new(Job {
            metadata: m,
            spec: Some(JobSpec {
                // Each index is one worker: it lives for the whole pass and claims shards. The
                // index names its report file; a crashed worker is started again under its
                // index (`backoffLimitPerIndex`), and its claims go back to the pass's queue.
                completion_mode: Some("Indexed".into()),
                completions: Some(workers),
                parallelism: Some(workers),
                backoff_limit_per_index: Some(retries),
                pod_failure_policy: Some(pod_failure_policy(role)),
                // A replacement starts only after the old pod is gone (its claims are then released).
                pod_replacement_policy: Some("Failed".into()),
                template,
                ..Default::default()
            }),
            status: None,
        })));
    }
    Ok(out)
}

/// Which spec a Job was built from ([`crate::stage::applied_generation`] reads them back).
fn spec_annotations(ij: &IngestJob) -> [(String, String); 2] {
    [
        (
            crate::stage::GENERATION_ANNOTATION.to_owned(),
            ij.metadata.generation.unwrap_or(0).to_string(),
        ),
        (
            crate::stage::SPEC_HASH_ANNOTATION.to_owned(),
            crate::stage::spec_hash(&ij.spec),
        ),
    ]
}

/// Exit code for unusable input (a bad argument or an unreadable root): no retry can fix it.
pub const EXIT_UNUSABLE: i32 = 2;

/// How Kubernetes treats a failed pod of any Job (rules in order, the first match applies):
/// - the pod was evicted, preempted or its node drained (`DisruptionTarget`): `Ignore`, a new pod
///   takes its place without using up a retry;
/// - exit 2 (unusable input): `FailJob`;
/// - copy and verify workers only, exit 4 (a destination server stopped answering: the worker
///   handed its shards back and told the operator): `FailIndex`, no pod of this Job replaces
///   it, since a new one would mount the hung server again and never start. The operator makes
///   the pass a new Job (`-x<n>`, see [`names::worker_job`]) whose pods do not mount it;
/// - anything else (a crash, OOM kill, a worker that could not reach the operator, a lost API server
///   during the scan's plan store): counted and retried (`backoffLimit` for the scan,
///   `backoffLimitPerIndex` for a worker).
///
/// No exit means "some entries failed": the scan puts them in the plan summary and exits 0, and a
/// worker reports them with each shard to the operator.
pub fn pod_failure_policy(role: &str) -> PodFailurePolicy {
    let exit = |action: &str, code: i32| PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: "In".into(),
            values: vec![code],
        }),
        on_pod_conditions: None,
    };
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".into(),
                on_exit_codes: None,
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
            },
            exit("FailJob", EXIT_UNUSABLE),
        ]
        .into_iter()
        .chain(
            (role != labels::ROLE_SCAN)
                .then(|| exit("FailIndex", ingest_job::exit::MOUNT_UNRESPONSIVE)),
        )
        .collect(),
    }
}

fn plain_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn join(root: &str, sub: Option<&str>) -> String {
    match sub.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty()) {
        Some(s) => format!("{root}/{s}"),
        None => root.to_owned(),
    }
}

/// Walker threads of the scan pod: the spec's count, or 16 for `auto`. `auto` is the copy adapting its operations in
/// flight to each destination mount while it writes; the scan only lists and stats the source, and its `--threads`
/// takes a number, so it gets the count `threadsPerWorker` has always defaulted to.
fn scan_threads(t: ThreadsPerWorker) -> u32 {
    match t {
        ThreadsPerWorker::Fixed(n) => n,
        ThreadsPerWorker::Auto => 16,
    }
}

fn scan_args(ij: &IngestJob, settings: &Settings) -> Vec<String> {
    let s = &ij.spec;
    let servers = &s.destination.nfs.servers;
    let workers = s.workers.unwrap_or(servers.len() as u32);
    let mut a = vec![
        "scan".to_owned(),
        join(SOURCE_MOUNT, s.source.sub_path.as_deref()),
        "--cluster".into(),
        // Where it sends the plan, and the token it shows there (as the workers do).
        "--claims-url".into(),
        settings.claims_url.clone(),
        "--token-file".into(),
        token_file(),
        "--threads".into(),
        scan_threads(s.threads_per_worker).to_string(),
        "--workers".into(),
        workers.to_string(),
    ];
    // The plan records the servers; workers mount all of them and take shards from one queue.
    for server in servers {
        a.extend(["--server".to_owned(), server.clone()]);
    }
    // The scan refuses a source it finds NFS-mounted from one of those servers over the
    // destination's tree (a PVC's volume: the spec does not say its server).
    let dst = &s.destination;
    a.extend([
        "--destination-tree".to_owned(),
        join(&dst.nfs.path, dst.sub_path.as_deref()),
    ]);
    for (flag, v) in [
        ("--shards", s.shards.target.map(u64::from)),
        ("--max-files", s.shards.max_files),
        ("--max-bytes", s.shards.max_bytes),
    ] {
        if let Some(v) = v {
            a.extend([flag.to_owned(), v.to_string()]);
        }
    }
    // The scan fixes the ages to its start and writes the filter into the plan, from which
    // every worker of the run takes it. (A filter that does not compile was refused with the
    // rest of the spec before any Job is built.)
    a.extend(s.filter.to_spec().map(|f| f.to_args()).unwrap_or_default());
    a
}

/// Where every pod finds the token it shows the operator's endpoint (the projected volume).
fn token_file() -> String {
    format!(
        "{}/{}",
        ingest_api::claims::TOKEN_DIR,
        ingest_api::claims::TOKEN_FILE
    )
}

fn worker_args(
    ij: &IngestJob,
    role: &str,
    servers: &[(usize, &String)],
    settings: &Settings,
    layout: &crate::stage::Layout,
) -> Vec<String> {
    let s = &ij.spec;
    let verify = match s.verify.mode {
        VerifyMode::None => "none",
        VerifyMode::Metadata => "metadata",
        VerifyMode::Checksum => "checksum",
    };
    let mut args = vec![
        "worker".to_owned(),
        "--plan".into(),
        crate::plan_store::PLAN_MOUNT.into(),
        "--phase".into(),
        role.into(),
        "--claims-url".into(),
        settings.claims_url.clone(),
        "--token-file".into(),
        token_file(),
        "--result-file".into(),
        crate::pod::TERMINATION_LOG.into(),
        "--source".into(),
        join(SOURCE_MOUNT, s.source.sub_path.as_deref()),
    ];
    // Every destination server: the engine spreads its threads over them (`auto` moves work off a
    // slow one).
    for (i, _) in servers {
        args.extend([
            "--dest".into(),
            join(&dest_mount(*i), s.destination.sub_path.as_deref()),
        ]);
    }
    if role != labels::ROLE_COPY {
        // The copy pass's figures: a pass that starts knowing which server is slow leaves it the
        // least work when little is left. In `--dest` order (each pod turns both alike).
        let paces: Vec<Option<u64>> = servers
            .iter()
            .map(|(i, _)| layout.paces.get(i).copied())
            .collect();
        args.extend(ingest_job::latency::mount_pace_arg(&paces));
    }
    args.extend([
        // `16` or `auto` (the engine's adaptive concurrency per destination mount).
        "--threads".into(),
        s.threads_per_worker.to_string(),
        "--verify".into(),
        verify.into(),
        "--preserve".into(),
        s.preserve.worker_arg(),
        // A destination whose operations wait this long with none finishing is reported
        // unresponsive (the worker hands its shards back and exits 4).
        "--stall-timeout".into(),
        s.stall_timeout_seconds().to_string(),
    ]);
    if !s.verify.repair {
        args.push("--no-repair".into());
    }
    if layout.dry_run {
        // Compare only (the run has no copy pass).
        args.push("--dry-run".into());
    }
    if let Some(t) = layout
        .content_changed_since
        .filter(|_| role == labels::ROLE_VERIFY && s.verify.mode == VerifyMode::Checksum)
    {
        args.push(format!("--content-changed-since={t}"));
    }
    if layout.mirror.is_some() {
        // The copy pass weighs what only the destination has (the prune pass deletes it); the
        // verify pass names what is left, and a dry run what a mirror would delete.
        args.push("--mirror".into());
    }
    if let Some(l) = &s.limits {
        // The job's rates, divided among its worker pods.
        args.extend(l.worker_args(layout.workers));
    }
    if s.verify.fsync {
        args.push("--fsync".into());
    }
    if let Some(file) = report_file(ij, role, servers, layout.avoided.of(role).len()) {
        args.extend(["--report".into(), file]);
    }
    args
}

/// What a worker pod mounts besides the source.
struct WorkerMounts<'a> {
    /// The destination servers to mount (index in the spec, address), each at [`dest_mount`]
    /// of its index.
    servers: &'a [(usize, &'a String)],
    /// Number of plan ConfigMaps to project into [`crate::plan_store::PLAN_MOUNT`].
    plan_chunks: u32,
}

/// The pod template shared by scan, copy and verify Jobs. `w`: `spec.worker` merged with the defaults.
/// `worker`: the destination servers and plan for copy and verify pods; the scan mounts only the source.
fn pod_template(
    ij: &IngestJob,
    w: &WorkerTemplate,
    role: &str,
    args: Vec<String>,
    worker: Option<WorkerMounts<'_>>,
    settings: &Settings,
) -> PodTemplateSpec {
    let s = &ij.spec;
    let run = s.run;
    let mut volumes =
        vec![Volume {
            name: "source".into(),
            nfs: s.source.nfs.as_ref().map(|n| NFSVolumeSource {
                server: n.server.clone(),
                path: n.path.clone(),
                read_only: Some(true),
            }),
            persistent_volume_claim: s.source.pvc.as_ref().map(|p| {
                PersistentVolumeClaimVolumeSource {
                    claim_name: p.claim_name.clone(),
                    read_only: Some(true),
                }
            }),
            ..Default::default()
        }];
    let mut mounts = vec![VolumeMount {
        name: "source".into(),
        mount_path: SOURCE_MOUNT.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    // The token every pod shows the operator's endpoint (the scan sends its plan, workers claim):
    // bound to this pod, for that audience only, refreshed by the kubelet.
    volumes.push(Volume {
        name: "claims-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(ingest_api::claims::TOKEN_AUDIENCE.into()),
                    expiration_seconds: Some(3600),
                    path: ingest_api::claims::TOKEN_FILE.into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "claims-token".into(),
        mount_path: ingest_api::claims::TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    if let Some(WorkerMounts {
        servers,
        plan_chunks,
    }) = worker
    {
        let prefix = names::plan_prefix(ij, run);
        volumes.push(Volume {
            name: "plan".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(
                    (0..plan_chunks)
                        .map(|k| VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: format!("{prefix}-{k}"),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "plan".into(),
            mount_path: crate::plan_store::PLAN_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        let with_options = s
            .destination
            .nfs
            .mount_options
            .as_ref()
            .is_some_and(|o| !o.is_empty());
        for &(index, server) in servers {
            let name = format!("dest-{index}");
            volumes.push(Volume {
                name: name.clone(),
                nfs: (!with_options).then(|| NFSVolumeSource {
                    server: server.to_owned(),
                    path: s.destination.nfs.path.clone(),
                    read_only: Some(false),
                }),
                persistent_volume_claim: with_options.then(|| PersistentVolumeClaimVolumeSource {
                    claim_name: names::dest_claim(ij, index),
                    read_only: Some(false),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name,
                mount_path: dest_mount(index),
                ..Default::default()
            });
        }
        // A report under `destinationPath` goes through the first `dest` mount; a claim gets its own volume.
        if let Some(pvc) = s.report.as_ref().and_then(|r| r.pvc.as_ref()) {
            volumes.push(Volume {
                name: "report".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "report".into(),
                mount_path: REPORT_MOUNT.into(),
                ..Default::default()
            });
        }
    }
    let env = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        plain_env(env::JOB_NAME, ij.name_any()),
        plain_env(env::JOB_UID, ij.uid().unwrap_or_default()),
        plain_env(env::RUN, run.to_string()),
        plain_env(env::PLAN_PREFIX, names::plan_prefix(ij, run)),
    ];
    let sc = w.security_context.clone().unwrap_or_default();
    let uid = sc.run_as_user.unwrap_or(0);
    // Root is needed to read every source file and to set owners; give it only the capabilities that needs,
    // all of them in what Pod Security's `baseline` level allows (DAC_OVERRIDE already reads and searches
    // what DAC_READ_SEARCH would).
    let dac = settings
        .policy
        .rules(&ij.namespace().unwrap_or_default())
        .dac_capabilities();
    let caps = if uid == 0 {
        let mut c = if dac {
            vec!["DAC_OVERRIDE", "FOWNER", "FSETID"]
        } else {
            Vec::new()
        };
        if s.preserve.owner {
            c.push("CHOWN");
        }
        c.into_iter().map(String::from).collect()
    } else {
        Vec::new()
    };
    let container = Container {
        name: role.into(),
        image: Some(
            w.image
                .clone()
                .unwrap_or_else(|| settings.default_image.clone()),
        ),
        image_pull_policy: w.image_pull_policy.map(|p| format!("{p:?}")),
        command: Some(vec![BINARY.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: Some(w.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            run_as_user: Some(uid),
            run_as_group: Some(sc.run_as_group.unwrap_or(uid)),
            run_as_non_root: Some(uid != 0),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(caps).filter(|c| !c.is_empty()),
            }),
            ..Default::default()
        }),
        // A crash before the result is written still leaves the log tail for the operator's failure message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    // The user's labels and annotations first: the operator's own (what its watches and the
    // Jobs' selectors go by) are put over them. (Keys of the operator's are refused by the spec's
    // validation; this keeps a pod selectable even if one got through.)
    let mut pod_labels = w.labels.clone().unwrap_or_default();
    pod_labels.extend(names::child_labels(ij, role, Some(run)));
    let mut pod_annotations = w.annotations.clone().unwrap_or_default();
    pod_annotations.insert(annotations::INGEST_JOB.to_owned(), ij.name_any());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: Some(
                w.service_account_name
                    .clone()
                    .unwrap_or_else(|| names::worker_identity(ij)),
            ),
            // No pod talks to the API server; a service account the job names keeps its own
            // setting.
            automount_service_account_token: w.service_account_name.is_none().then_some(false),
            node_selector: w.node_selector.clone(),
            tolerations: w.tolerations.clone(),
            image_pull_secrets: w.image_pull_secrets.clone(),
            priority_class_name: w.priority_class_name.clone(),
            affinity: w.affinity.clone(),
            topology_spread_constraints: w.topology_spread_constraints.clone(),
            security_context: Some(PodSecurityContext {
                supplemental_groups: sc.supplemental_groups.clone(),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("1".into())),
            ("memory".into(), Quantity("1Gi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("4Gi".into()))])),
        ..Default::default()
    }
}

/// A PV (with the mount options) pre-bound to a PVC for one destination server. The PV keeps `Retain`: deleting
/// it never touches copied data.
fn destination_volume(
    ij: &IngestJob,
    ns: &str,
    index: usize,
    server: &str,
    opts: &[String],
    claim_meta: ObjectMeta,
) -> (PersistentVolume, PersistentVolumeClaim) {
    let pv_name = names::dest_volume(ij, index);
    let claim_name = claim_meta.name.clone().unwrap_or_default();
    let mut pv_labels = names::child_labels(ij, labels::ROLE_VOLUME, None);
    pv_labels.insert(NAMESPACE_LABEL.into(), ns.to_owned());
    let size = BTreeMap::from([("storage".to_owned(), Quantity("1Pi".into()))]);
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            labels: Some(pv_labels),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(size.clone()),
            access_modes: Some(vec!["ReadWriteMany".into()]),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(String::new()),
            mount_options: Some(opts.to_vec()),
            nfs: Some(NFSVolumeSource {
                server: server.to_owned(),
                path: ij.spec.destination.nfs.path.clone(),
                read_only: Some(false),
            }),
            claim_ref: Some(ObjectReference {
                namespace: Some(ns.to_owned()),
                name: Some(claim_name),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    let pvc = PersistentVolumeClaim {
        metadata: claim_meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteMany".into()]),
            storage_class_name: Some(String::new()),
            volume_name: Some(pv_name),
            resources: Some(VolumeResourceRequirements {
                requests: Some(size),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    (pv, pvc)
}
