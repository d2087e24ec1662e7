//! Pure pipeline tests from YAML fixtures: stage → desired children → status, without any API server.
//! The passes the stage and status read are driven through the operator's real claims
//! [`Registry`] (see `common::drive`).

mod common;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use common::*;
use ingest_api::constants::{conditions as ct, labels, reasons};
use ingest_api::report::PodResult;
use ingest_api::{
    FileFailure, IngestJob, IngestJobStatus, Phase, ThreadsPerWorker, Totals, VerificationCounts,
};
use ingest_operator::claims::{Opening, Registry, Views};
use ingest_operator::desired::{Child, REPORT_MOUNT, SOURCE_MOUNT, Settings, desired, dest_mount};
use ingest_operator::observe::Observed;
use ingest_operator::stage::{Stage, stage};
use ingest_operator::status::compute;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, Volume};
use kube::ResourceExt;

fn totals() -> Totals {
    Totals {
        files: 1000,
        directories: 10,
        bytes: 1_000_000,
        ..Default::default()
    }
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn volume<'a>(job: &'a Job, name: &str) -> &'a Volume {
    pod_spec(job)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("{}: no volume {name}", job.name_any()))
}

fn env(job: &Job, name: &str) -> Option<String> {
    pod_spec(job).containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn arg_after(job: &Job, flag: &str) -> Option<String> {
    let a = args(job);
    a.iter()
        .position(|x| x == flag)
        .and_then(|i| a.get(i + 1).cloned())
}

/// Every value given to `flag`, in order.
fn args_after(job: &Job, flag: &str) -> Vec<String> {
    args(job)
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

fn args(job: &Job) -> Vec<String> {
    pod_spec(job).containers[0].args.clone().unwrap()
}

fn mounts(job: &Job) -> Vec<(String, String)> {
    pod_spec(job).containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect()
}

fn has_volume(job: &Job, name: &str) -> bool {
    pod_spec(job)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .any(|v| v.name == name)
}

/// The Jobs of `role` among `children`.
fn role_jobs(children: &[Child], role: &str) -> Vec<Job> {
    jobs_of(children)
        .into_iter()
        .filter(|j| j.labels()[labels::ROLE] == role)
        .cloned()
        .collect()
}

/// A Job whose every worker pod ended (completions done).
fn finished(j: &Job) -> Job {
    let n = j.spec.as_ref().unwrap().completions.unwrap();
    observed_job(j, true, false, &format!("0-{}", n - 1), "", 0)
}

/// A Job whose worker pods run.
fn running(j: &Job) -> Job {
    let n = j.spec.as_ref().unwrap().parallelism.unwrap();
    observed_job(j, false, false, "", "", n)
}

/// The Ready condition's reason of a status.
fn ready_reason(st: &IngestJobStatus) -> String {
    ingest_api::conditions::find(&st.conditions, ct::READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// A verify shard's result: `checked` entries, all identical.
fn verified(checked: u64) -> PodResult {
    PodResult {
        verification: Some(VerificationCounts {
            checked,
            matched: checked,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `ij` scanned into `shards` shards, its copy pass completed (every shard copied `files` files)
/// and its copy Job finished: the verify stage, with a fresh verify pass.
fn copied(ij: &IngestJob, shards: u64) -> (Observed, Views) {
    let mut obs = scanned(ij, shards, totals(), false);
    add_pass_job(ij, &mut obs, "copy", finished);
    let v = views(
        ij,
        shards,
        Some(&PassScript::all_done(shards, result(10, 100, 0))),
        Some(&PassScript::default()),
    );
    (obs, v)
}

/// The pod settings platform teams expect reach every pod the job runs (scan, copy and verify),
/// and the user's labels never displace the operator's own, which its Jobs select on.
#[test]
fn pod_settings_reach_every_pod_and_the_operators_labels_stay() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.worker = serde_json::from_value(serde_json::json!({
        "imagePullSecrets": [{"name": "registry-creds"}],
        "priorityClassName": "batch-low",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eastus-1"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway"}],
        "labels": {"cost-center": "render", "ingest.vfxt.dev/role": "forged"},
        "annotations": {"note": "migration 7"},
    }))
    .unwrap();
    let scan = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let obs = scanned(&ij, 4, totals(), false);
    let copy = desired(&ij, &stage(&ij, &obs, &no_passes()), &settings()).unwrap();
    let (verify_obs, verify_views) = copied(&ij, 4);
    let verify = desired(&ij, &stage(&ij, &verify_obs, &verify_views), &settings()).unwrap();
    let mut roles = Vec::new();
    for job in jobs_of(&scan)
        .into_iter()
        .chain(jobs_of(&copy))
        .chain(jobs_of(&verify))
    {
        let t = &job.spec.as_ref().unwrap().template;
        let meta = t.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        let role = labels["ingest.vfxt.dev/role"].clone();
        assert_ne!(role, "forged", "the operator's label wins");
        assert_eq!(labels["cost-center"], "render");
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "migration 7");
        let p = t.spec.as_ref().unwrap();
        assert_eq!(
            p.image_pull_secrets.as_ref().unwrap()[0].name,
            "registry-creds"
        );
        assert_eq!(p.priority_class_name.as_deref(), Some("batch-low"));
        assert!(p.affinity.as_ref().unwrap().node_affinity.is_some());
        assert_eq!(p.topology_spread_constraints.as_ref().unwrap().len(), 1);
        roles.push(role);
    }
    roles.sort();
    roles.dedup();
    assert_eq!(roles, ["copy", "scan", "verify"]);
}

/// `spec.filter` goes to the scan, which fixes the ages to its start and writes the filter into
/// the plan; the workers take it from there, so a copy pod carries no filter of its own.
#[test]
fn the_filter_goes_to_the_scan_and_the_workers_take_it_from_the_plan() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.filter = serde_json::from_value(serde_json::json!({
        "exclude": ["*.tmp", "-odd", ".snapshot/"],
        "include": ["projects/**"],
        "minAge": "10m",
    }))
    .unwrap();
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let a = args(jobs_of(&children)[0]);
    for want in [
        "--exclude=*.tmp",
        "--exclude=-odd",
        "--exclude=.snapshot/",
        "--include=projects/**",
        "--min-age=600s",
    ] {
        assert!(a.iter().any(|x| x == want), "{want} in {a:?}");
    }
    assert!(!a.iter().any(|x| x.starts_with("--max-age")), "{a:?}");
    let obs = scanned(&ij, 4, totals(), false);
    let st = stage(&ij, &obs, &no_passes());
    assert!(matches!(st, Stage::Copy(..)), "{st:?}");
    let copies = role_jobs(&desired(&ij, &st, &settings()).unwrap(), "copy");
    assert_eq!(copies.len(), 1);
    for job in &copies {
        assert!(
            !args(job).iter().any(|x| x.starts_with("--exclude")),
            "{:?}",
            args(job)
        );
    }
}

#[test]
fn fresh_job_gets_identity_and_a_scan_job_that_mounts_the_source_read_only() {
    let ij = fixture("one-ip.yaml");
    assert_eq!(stage(&ij, &empty(), &no_passes()), Stage::Scan);
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let kinds: Vec<String> = children.iter().map(Child::describe).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount/genomics-workers", "Job/genomics-r0-scan"]
    );
    // No Role, no RoleBinding: no pod has API rights. The scan sends its plan to the operator's
    // endpoint, and the workers claim, report and read the plan there or from a volume.
    let scan = jobs_of(&children)[0];
    let src = volume(scan, "source").nfs.as_ref().unwrap();
    assert_eq!(
        (src.server.as_str(), src.path.as_str(), src.read_only),
        ("10.0.0.5", "/export/genomics", Some(true))
    );
    let names: Vec<&str> = pod_spec(scan)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["source", "claims-token"],
        "the scan never mounts the destination"
    );
    let a = args(scan);
    assert_eq!(
        &a[..3],
        ["scan", &format!("{SOURCE_MOUNT}/2019"), "--cluster"]
    );
    assert!(
        a.windows(2)
            .any(|w| w == ["--claims-url", settings().claims_url.as_str()]),
        "{a:?}"
    );
    assert!(a.windows(2).any(|w| w == ["--shards", "8"]));
    assert!(
        a.windows(2).any(|w| w == ["--server", "10.1.1.101"]),
        "the plan is dealt to the spec's servers"
    );
    assert!(a.windows(2).any(|w| w == ["--workers", "2"]));
    // The destination's tree, against which the scan checks a source it finds NFS-mounted.
    assert!(
        a.windows(2)
            .any(|w| w == ["--destination-tree", "/nfs/genomics/2019"]),
        "{a:?}"
    );
    let owner = &scan.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("IngestJob", Some(true))
    );
    assert_eq!(scan.labels()[labels::ROLE], "scan");
}

#[test]
fn one_ip_copy_job_mounts_that_server_and_runs_the_pass_workers() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 8, totals(), false);
    let st = stage(&ij, &obs, &no_passes());
    assert!(matches!(st, Stage::Copy(..)), "{st:?}");
    let children = desired(&ij, &st, &settings()).unwrap();
    let copies = role_jobs(&children, "copy");
    assert_eq!(copies.len(), 1);
    let j = &copies[0];
    assert_eq!(j.name_any(), "genomics-r0-copy");
    let spec = j.spec.as_ref().unwrap();
    // One index per worker (spec.workers 2), not per shard: the workers claim the 8 shards.
    assert_eq!(
        (
            spec.completion_mode.as_deref(),
            spec.completions,
            spec.parallelism
        ),
        (Some("Indexed"), Some(2), Some(2))
    );
    assert_eq!(spec.backoff_limit_per_index, Some(3));
    let dst = volume(j, "dest-0").nfs.as_ref().unwrap();
    assert_eq!(
        (dst.server.as_str(), dst.path.as_str()),
        ("10.1.1.101", "/nfs")
    );
    assert!(!has_volume(j, "dest-1"));
    let a = args(j);
    assert_eq!(
        &a[..5],
        ["worker", "--plan", "/ingest/plan", "--phase", "copy"]
    );
    assert!(
        !a.iter()
            .any(|x| x == "--server-index" || x == "--index" || x == "--shard"),
        "no shard is dealt to a pod: {a:?}"
    );
    assert_eq!(
        env(j, "INGEST_PLAN_PREFIX").as_deref(),
        Some("genomics-r0-plan")
    );
    assert_eq!(
        env(j, "INGEST_JOB_UID").as_deref(),
        Some("6f1c2f0e-0000-4000-8000-000000000001")
    );
    assert_eq!(
        args_after(j, "--dest"),
        [format!("{}/genomics/2019", dest_mount(0))]
    );
    assert!(a.windows(2).any(|w| w == ["--threads", "32"]));
    let sc = pod_spec(j).containers[0].security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(
        sc.capabilities
            .unwrap()
            .add
            .unwrap()
            .contains(&"CHOWN".to_owned()),
        "preserve.owner needs CHOWN"
    );
}

#[test]
fn root_pods_keep_the_dac_capabilities_only_where_the_admin_policy_allows() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 4, totals(), false);
    let caps = |settings: &Settings| {
        let children = desired(&ij, &stage(&ij, &obs, &no_passes()), settings).unwrap();
        let j = &role_jobs(&children, "copy")[0];
        let sc = pod_spec(j).containers[0].security_context.clone().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        sc.capabilities.unwrap().add.unwrap_or_default()
    };
    assert_eq!(
        caps(&settings()),
        ["DAC_OVERRIDE", "FOWNER", "FSETID", "CHOWN"]
    );
    let policy = ingest_api::policy::AdmissionPolicy::from_json(
        r#"{"namespaces": {"ingest": {"allowDacCapabilities": false}}}"#,
    )
    .unwrap();
    assert_eq!(
        caps(&Settings {
            policy,
            ..settings()
        }),
        ["CHOWN"],
        "owners are still kept; nothing overrides file permissions"
    );
}

#[test]
fn three_ips_one_copy_job_per_pass_whose_pods_mount_all_three_servers() {
    let ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 100, totals(), false);
    let children = desired(&ij, &stage(&ij, &obs, &no_passes()), &settings()).unwrap();
    let copies = role_jobs(&children, "copy");
    assert_eq!(copies.len(), 1, "one Job per pass, not per server");
    let j = &copies[0];
    assert_eq!(j.name_any(), "media-r0-copy");
    for i in 0..3 {
        assert_eq!(
            volume(j, &format!("dest-{i}")).nfs.as_ref().unwrap().server,
            format!("10.1.1.10{}", i + 1)
        );
    }
    let src = volume(j, "source")
        .persistent_volume_claim
        .as_ref()
        .unwrap();
    assert_eq!(
        (src.claim_name.as_str(), src.read_only),
        ("old-filer", Some(true))
    );
    assert_eq!(arg_after(j, "--plan").as_deref(), Some("/ingest/plan"));
    let plan = volume(j, "plan")
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    let names: Vec<_> = plan
        .iter()
        .map(|p| p.config_map.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        ["media-r0-plan-0", "media-r0-plan-1"],
        "every chunk of the plan is mounted"
    );
    let spec = j.spec.as_ref().unwrap();
    // spec.workers 6 workers in all (not 6 per server), whatever the 100 shards.
    assert_eq!((spec.completions, spec.parallelism), (Some(6), Some(6)));
    let pod = pod_spec(j);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("registry.example/vfxt-ingest:1.0")
    );
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "ingest");
    assert!(
        !j.annotations().contains_key("ingest.vfxt.dev/server"),
        "no Job belongs to one server"
    );
}

#[test]
fn with_three_servers_worker_pods_mount_each_and_reach_the_claims_endpoint_with_a_bound_token() {
    let ij = fixture("three-ips.yaml");
    let mut s = settings();
    s.claims_url = "http://claims.example:9443".into();
    let obs = scanned(&ij, 9, totals(), false);
    let copy_stage = stage(&ij, &obs, &no_passes());
    let (verify_obs, verify_views) = copied(&ij, 9);
    let verify_stage = stage(&ij, &verify_obs, &verify_views);
    assert!(
        matches!(verify_stage, Stage::Verify(..)),
        "{verify_stage:?}"
    );
    for (role, st) in [("copy", copy_stage), ("verify", verify_stage)] {
        let children = desired(&ij, &st, &s).unwrap();
        let jobs = role_jobs(&children, role);
        assert_eq!(jobs.len(), 1, "{role}");
        let j = &jobs[0];
        assert_eq!(j.name_any(), format!("media-r0-{role}"));
        let pod = pod_spec(j);
        let dests: Vec<(String, String, String, Option<bool>)> = pod
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.name.starts_with("dest-"))
            .map(|v| {
                let n = v.nfs.as_ref().unwrap();
                (
                    v.name.clone(),
                    n.server.clone(),
                    n.path.clone(),
                    n.read_only,
                )
            })
            .collect();
        assert_eq!(
            dests,
            (0..3)
                .map(|i| (
                    format!("dest-{i}"),
                    format!("10.1.1.10{}", i + 1),
                    "/nfs".to_owned(),
                    Some(false)
                ))
                .collect::<Vec<_>>(),
            "{role}"
        );
        for i in 0..3 {
            assert!(
                mounts(j).contains(&(format!("dest-{i}"), format!("/ingest/dest-{i}"))),
                "{role}: {:?}",
                mounts(j)
            );
        }
        let token = volume(j, "claims-token").projected.as_ref().unwrap();
        let sources = token.sources.as_ref().unwrap();
        assert_eq!(sources.len(), 1);
        let sat = sources[0].service_account_token.as_ref().unwrap();
        assert_eq!(
            (sat.audience.as_deref(), sat.path.as_str()),
            (Some("ingest.vfxt.dev/claims"), "token")
        );
        assert!(sat.expiration_seconds.is_some());
        let m = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "claims-token")
            .unwrap();
        assert_eq!(
            (m.mount_path.as_str(), m.read_only),
            ("/var/run/secrets/ingest.vfxt.dev", Some(true))
        );
        assert_eq!(
            args_after(j, "--dest"),
            ["/ingest/dest-0", "/ingest/dest-1", "/ingest/dest-2"],
            "{role}"
        );
        assert_eq!(
            arg_after(j, "--claims-url").as_deref(),
            Some("http://claims.example:9443"),
            "the URL comes from the operator's settings"
        );
        assert_eq!(arg_after(j, "--phase").as_deref(), Some(role));
        assert_eq!(
            arg_after(j, "--token-file").as_deref(),
            Some("/var/run/secrets/ingest.vfxt.dev/token")
        );
        assert_eq!(
            arg_after(j, "--result-file").as_deref(),
            Some("/dev/termination-log")
        );
    }
}

#[test]
fn threads_per_worker_auto_gives_copy_and_verify_pods_threads_auto_and_the_scan_a_count() {
    let mut ij = fixture("auto-threads.yaml");
    assert_eq!(ij.spec.threads_per_worker, ThreadsPerWorker::Auto);

    // The scan only reads the source and takes a number: the default count.
    let scan = role_jobs(&desired(&ij, &Stage::Scan, &settings()).unwrap(), "scan");
    assert_eq!(arg_after(&scan[0], "--threads").as_deref(), Some("16"));

    let obs = scanned(&ij, 6, totals(), false);
    let copies = role_jobs(
        &desired(&ij, &stage(&ij, &obs, &no_passes()), &settings()).unwrap(),
        "copy",
    );
    assert_eq!(copies.len(), 1);
    let (obs, v) = copied(&ij, 6);
    let verify_stage = stage(&ij, &obs, &v);
    assert!(
        matches!(verify_stage, Stage::Verify(..)),
        "{verify_stage:?}"
    );
    let verifies = role_jobs(&desired(&ij, &verify_stage, &settings()).unwrap(), "verify");
    assert_eq!(verifies.len(), 1);
    for j in copies.iter().chain(&verifies) {
        assert_eq!(
            arg_after(j, "--threads").as_deref(),
            Some("auto"),
            "{}",
            j.name_any()
        );
    }

    // A fixed count reaches both, as before.
    ij.spec.threads_per_worker = ThreadsPerWorker::Fixed(48);
    let scan = role_jobs(&desired(&ij, &Stage::Scan, &settings()).unwrap(), "scan");
    assert_eq!(arg_after(&scan[0], "--threads").as_deref(), Some("48"));
    let (obs, v) = copied(&ij, 6);
    let all = desired(&ij, &stage(&ij, &obs, &v), &settings()).unwrap();
    let workers: Vec<Job> = role_jobs(&all, "copy")
        .into_iter()
        .chain(role_jobs(&all, "verify"))
        .collect();
    assert_eq!(workers.len(), 2);
    assert!(
        workers
            .iter()
            .all(|j| arg_after(j, "--threads").as_deref() == Some("48"))
    );
}

#[test]
fn verify_repair_false_reaches_every_worker_as_no_repair() {
    let mut ij = fixture("auto-threads.yaml");
    let (obs, v) = copied(&ij, 6);
    let verify_stage = stage(&ij, &obs, &v);
    assert!(
        matches!(verify_stage, Stage::Verify(..)),
        "{verify_stage:?}"
    );
    let no_repair = |ij: &IngestJob| -> Vec<bool> {
        role_jobs(&desired(ij, &verify_stage, &settings()).unwrap(), "verify")
            .iter()
            .map(|j| args(j).iter().any(|a| a == "--no-repair"))
            .collect()
    };
    assert!(ij.spec.verify.repair, "repairs by default");
    assert_eq!(no_repair(&ij), [false]);
    ij.spec.verify.repair = false;
    assert_eq!(no_repair(&ij), [true]);
}

#[test]
fn report_on_a_claim_mounts_it_in_every_worker_pod_and_passes_a_file_per_worker() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.run = 2;
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"pvc": {"claimName": "ingest-reports", "subPath": "team-a"}}
        ))
        .unwrap(),
    );
    assert_eq!(ingest_api::validate::validate_spec(&ij.spec), Ok(()));
    let obs = scanned(&ij, 6, totals(), false);
    let (verify_obs, verify_views) = copied(&ij, 6);
    for (role, st) in [
        ("copy", stage(&ij, &obs, &no_passes())),
        ("verify", stage(&ij, &verify_obs, &verify_views)),
    ] {
        let children = desired(&ij, &st, &settings()).unwrap();
        let workers = role_jobs(&children, role);
        assert_eq!(workers.len(), 1, "{role}");
        let j = &workers[0];
        let pvc = volume(j, "report")
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(
            (pvc.claim_name.as_str(), pvc.read_only),
            ("ingest-reports", Some(false))
        );
        assert!(
            mounts(j).contains(&("report".into(), REPORT_MOUNT.into())),
            "{role}"
        );
        // One file per worker index: a replacement pod of the index finishes its predecessor's.
        assert_eq!(
            arg_after(j, "--report").as_deref(),
            Some(
                format!(
                    "{REPORT_MOUNT}/team-a/media/run-2/{role}-$(JOB_COMPLETION_INDEX).jsonl.gz"
                )
                .as_str()
            ),
            "{role}"
        );
        // The scan has no per-entry report (its unreadable entries are in the plan summary).
        let scan = &role_jobs(&children, "scan")[0];
        assert!(!has_volume(scan, "report") && arg_after(scan, "--report").is_none());
    }
    let status = compute(
        &ij,
        &verify_obs,
        &stage(&ij, &verify_obs, &verify_views),
        &verify_views,
        at(10),
    );
    assert_eq!(
        status.report.unwrap().location,
        "pvc ingest-reports:/team-a/media/run-2/"
    );
}

#[test]
fn report_in_the_destination_export_goes_through_the_first_servers_mount() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"destinationPath": "vfxt-ingest-reports"}
        ))
        .unwrap(),
    );
    assert_eq!(ingest_api::validate::validate_spec(&ij.spec), Ok(()));
    let obs = scanned(&ij, 8, totals(), false);
    let st = stage(&ij, &obs, &no_passes());
    let children = desired(&ij, &st, &settings()).unwrap();
    let copy = &role_jobs(&children, "copy")[0];
    assert!(
        !has_volume(copy, "report"),
        "no extra volume: the export is mounted already"
    );
    assert_eq!(
        arg_after(copy, "--report").as_deref(),
        Some(
            format!(
                "{}/vfxt-ingest-reports/genomics/run-0/copy-$(JOB_COMPLETION_INDEX).jsonl.gz",
                dest_mount(0)
            )
            .as_str()
        )
    );
    // Beside the copied tree, never in it.
    assert_eq!(
        arg_after(copy, "--dest").as_deref(),
        Some(format!("{}/genomics/2019", dest_mount(0)).as_str())
    );
    let status = compute(&ij, &obs, &st, &no_passes(), at(10));
    assert_eq!(
        status.report.unwrap().location,
        "10.1.1.101:/nfs/vfxt-ingest-reports/genomics/run-0/"
    );

    // Without spec.report: no --report, no status.report (as before).
    ij.spec.report = None;
    let children = desired(&ij, &st, &settings()).unwrap();
    let copy = &role_jobs(&children, "copy")[0];
    assert!(arg_after(copy, "--report").is_none());
    assert!(
        compute(&ij, &obs, &st, &no_passes(), at(10))
            .report
            .is_none()
    );
}

#[test]
fn a_finished_runs_record_keeps_its_report_location() {
    let (mut ij, obs, v) = finished_with_failures([4, 7, 0]);
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"pvc": {"claimName": "reports"}}
        ))
        .unwrap(),
    );
    let record = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(30));
    assert_eq!(
        record.report.as_ref().unwrap().location,
        "pvc reports:/media/run-0/"
    );
    assert!(ingest_operator::status::recorded(Some(&record), 0));
    ij.status = Some(record.clone());
    // Editing spec.report afterwards says where the next run's reports go; this run's record is unchanged.
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"pvc": {"claimName": "other"}}
        ))
        .unwrap(),
    );
    assert_eq!(
        compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(900)),
        record
    );
}

/// Every pod (the scan too) shows the operator's endpoint a token bound to it, for the endpoint's
/// audience, from a projected volume, and mounts no API token: none has API rights. With the
/// user's service account the pods run as it, keep its token setting, and still get the bound
/// token. The Job is applied after its pods' identity (`Child::tier`).
#[test]
fn every_pod_shows_the_endpoint_a_bound_token_and_none_gets_an_api_token() {
    let ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 6, totals(), false);
    let scan = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let copy = desired(&ij, &stage(&ij, &obs, &no_passes()), &settings()).unwrap();
    let sa = scan
        .iter()
        .position(|c| matches!(c, Child::ServiceAccount(_)))
        .unwrap();
    let job = scan
        .iter()
        .position(|c| matches!(c, Child::Job(_)))
        .unwrap();
    assert!(scan[sa].tier() < scan[job].tier());
    let token_file = format!(
        "{}/{}",
        ingest_api::claims::TOKEN_DIR,
        ingest_api::claims::TOKEN_FILE
    );
    let check = |children: &[Child], account: &str, automount: Option<bool>| {
        let jobs = jobs_of(children);
        assert!(!jobs.is_empty());
        for j in jobs {
            let pod = pod_spec(j);
            assert_eq!(pod.service_account_name.as_deref(), Some(account));
            assert_eq!(pod.automount_service_account_token, automount);
            let projected = volume(j, "claims-token").projected.as_ref().unwrap();
            let token = projected.sources.as_ref().unwrap()[0]
                .service_account_token
                .as_ref()
                .unwrap();
            assert_eq!(
                token.audience.as_deref(),
                Some(ingest_api::claims::TOKEN_AUDIENCE)
            );
            let a = args(j);
            assert!(
                a.windows(2)
                    .any(|w| w == ["--token-file", token_file.as_str()]),
                "{}: {a:?}",
                j.name_any()
            );
            assert!(
                !pod_spec(j).containers[0]
                    .env
                    .iter()
                    .flatten()
                    .any(|e| e.name.contains("RBAC")),
                "no pod waits for a binding"
            );
        }
    };
    check(&scan, "media-workers", Some(false));
    check(&copy, "media-workers", Some(false));
    let mut own = ij.clone();
    own.spec.worker.service_account_name = Some("ingest-scanner".into());
    let scan = desired(&own, &Stage::Scan, &settings()).unwrap();
    assert!(!scan.iter().any(|c| matches!(c, Child::ServiceAccount(_))));
    check(&scan, "ingest-scanner", None);
}

#[test]
fn worker_defaults_fill_every_pod_template_and_the_spec_wins() {
    // three-ips.yaml sets worker.image and worker.nodeSelector {pool: ingest}, nothing else.
    let ij = fixture("three-ips.yaml");
    let mut with_defaults = settings();
    with_defaults.worker_defaults = serde_json::from_value(serde_json::json!({
        "image": "registry.example/defaults:2",
        "imagePullPolicy": "Always",
        "nodeSelector": {"agentpool": "default-pool"},
        "tolerations": [{"key": "workload", "value": "ingest", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "3"}}
    }))
    .unwrap();
    let obs = scanned(&ij, 6, totals(), false);
    let children = desired(&ij, &stage(&ij, &obs, &no_passes()), &with_defaults).unwrap();
    let jobs = jobs_of(&children);
    assert_eq!(jobs.len(), 2, "scan + the copy Job");
    for j in jobs {
        let pod = pod_spec(j);
        let c = &pod.containers[0];
        // Set by the spec: the spec's value, whole (no agentpool key mixed into the selector).
        assert_eq!(c.image.as_deref(), Some("registry.example/vfxt-ingest:1.0"));
        assert_eq!(
            pod.node_selector
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["pool"],
            "{}",
            j.name_any()
        );
        // Left unset by the spec: the defaults'.
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("workload")
        );
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
            "3"
        );
    }

    // A default service account replaces the per-job identity, as spec.worker.serviceAccountName does.
    with_defaults.worker_defaults.service_account_name = Some("shared-ingest".into());
    let children = desired(&ij, &Stage::Scan, &with_defaults).unwrap();
    assert!(
        !children
            .iter()
            .any(|c| matches!(c, Child::ServiceAccount(_))),
        "{:?}",
        children.iter().map(Child::describe).collect::<Vec<_>>()
    );
    let pod = pod_spec(jobs_of(&children)[0]);
    assert_eq!(pod.service_account_name.as_deref(), Some("shared-ingest"));

    // Without defaults nothing changes: the operator's image only when the spec names none.
    let mut bare = fixture("one-ip.yaml");
    bare.spec.worker = Default::default();
    let children = desired(&bare, &Stage::Scan, &settings()).unwrap();
    let pod = pod_spec(jobs_of(&children)[0]);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.example/vfxt-ingest:test")
    );
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
}

#[test]
fn mount_options_give_a_pre_bound_volume_and_claim_per_server_mounted_by_every_worker() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.destination.nfs.mount_options = Some(vec!["hard".into(), "nconnect=8".into()]);
    let obs = scanned(&ij, 9, totals(), false);
    let children = desired(&ij, &stage(&ij, &obs, &no_passes()), &settings()).unwrap();
    let pvs: Vec<_> = children
        .iter()
        .filter_map(|c| {
            if let Child::Volume(v) = c {
                Some(v)
            } else {
                None
            }
        })
        .collect();
    let pvcs: Vec<_> = children
        .iter()
        .filter_map(|c| {
            if let Child::Claim(v) = c {
                Some(v)
            } else {
                None
            }
        })
        .collect();
    assert_eq!((pvs.len(), pvcs.len()), (3, 3));
    for (i, (pv, pvc)) in pvs.iter().zip(&pvcs).enumerate() {
        let s = pv.spec.as_ref().unwrap();
        assert_eq!(
            s.nfs.as_ref().unwrap().server,
            format!("10.1.1.10{}", i + 1)
        );
        assert_eq!(s.mount_options.as_deref().unwrap(), ["hard", "nconnect=8"]);
        assert_eq!(
            s.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain"),
            "deleting never touches data"
        );
        assert_eq!(s.claim_ref.as_ref().unwrap().name, pvc.metadata.name);
        assert_eq!(pvc.spec.as_ref().unwrap().volume_name, pv.metadata.name);
    }
    let copies = role_jobs(&children, "copy");
    assert_eq!(copies.len(), 1);
    for (i, pvc) in pvcs.iter().enumerate() {
        let dest = volume(&copies[0], &format!("dest-{i}"));
        assert!(dest.nfs.is_none());
        assert_eq!(
            dest.persistent_volume_claim.as_ref().unwrap().claim_name,
            pvc.name_any()
        );
        assert_eq!(pvc.name_any(), format!("media-dst-{i}"));
        assert_eq!(
            pvc.spec.as_ref().unwrap().volume_name.as_deref(),
            Some(format!("ingest.media-dst-{i}").as_str()),
            "the volume's name holds the namespace, then '.' (which no namespace holds)"
        );
    }
}

#[test]
fn copying_status_sums_the_pass_completed_shards_plus_live_workers_progress_and_estimates_eta() {
    let ij0 = fixture("three-ips.yaml");
    let mut obs = scanned(&ij0, 6, totals(), false);
    add_pass_job(&ij0, &mut obs, "copy", running);
    let reg = Registry::default();
    let (a, b, gone) = (
        worker_pod_name(&ij0, "copy", 1, "aaaaa"),
        worker_pod_name(&ij0, "copy", 2, "bbbbb"),
        worker_pod_name(&ij0, "copy", 3, "ccccc"),
    );
    drive(
        &reg,
        &ij0,
        "copy",
        6,
        &PassScript::done([1, 2], result(20, 20_000, 0))
            .with(0, result(60, 60_000, 1))
            .running(&a, &[3], progress(40, 200_000))
            .running(&b, &[4], progress(10, 200_000))
            .running(&gone, &[5], progress(50, 50_000)),
    );
    // The pod working on shard 5 was killed: its progress no longer counts (the shard's next
    // attempt starts over), and the shard goes back to the queue.
    reg.workers_ended(&ij0, "copy", [gone.as_str()]);
    let v = reg.views(&ij0);
    let mut ij = ij0;
    ij.status = Some(IngestJobStatus {
        run: Some(0),
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
            1000,
        ))),
        ..Default::default()
    });
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(1100));
    assert_eq!(st.phase, Some(Phase::Copying));
    let p = st.progress.as_ref().unwrap();
    assert_eq!(
        (p.files, p.bytes),
        (60 + 20 + 20 + 40 + 10, 100_000 + 400_000)
    );
    assert_eq!(p.percent, 50.0);
    assert_eq!(p.percent_text, "50.0%");
    assert_eq!(p.bytes_per_second, 5000, "500 kB in 100 s");
    assert_eq!(
        p.eta.as_ref().unwrap().0,
        at(1200),
        "another 500 kB at 5 kB/s"
    );
    // Every worker mounts every server: no per-server split of the work.
    let servers: Vec<_> = st
        .servers
        .iter()
        .map(|s| (s.server.as_str(), s.workers, s.files, s.bytes))
        .collect();
    assert_eq!(
        servers,
        [
            ("10.1.1.101", 6, 0, 0),
            ("10.1.1.102", 6, 0, 0),
            ("10.1.1.103", 6, 0, 0)
        ]
    );
    let shards = st.shards.as_ref().unwrap();
    assert_eq!(
        (
            shards.total,
            shards.succeeded,
            shards.running,
            shards.pending,
            shards.failed
        ),
        (6, 3, 2, 1, 0)
    );
    assert_eq!(st.failed_files, 1);
    assert_eq!(st.failures[0].path, "d/f0");
    let cp = st.checkpoint.as_ref().unwrap();
    let copy_cp = cp.copy.as_ref().unwrap();
    assert_eq!(
        (copy_cp.completed.as_str(), copy_cp.files, copy_cp.failed),
        ("0-2", 100, 1),
        "the checkpoint holds completed shards only, never in-flight progress"
    );
    assert!(cp.verify.is_none());
    assert!(ingest_api::conditions::is_true(
        &st.conditions,
        ct::RECONCILING
    ));
    assert!(!ingest_api::conditions::is_true(&st.conditions, ct::READY));
}

#[test]
fn a_restarted_operator_resumes_from_the_status_checkpoint_and_progress_never_goes_backwards() {
    let ij0 = fixture("one-ip.yaml");
    let mut obs = scanned(&ij0, 8, totals(), false);
    add_pass_job(&ij0, &mut obs, "copy", running);
    let reg = Registry::default();
    let pod = worker_pod_name(&ij0, "copy", 1, "abcde");
    drive(
        &reg,
        &ij0,
        "copy",
        8,
        &PassScript::done(0..4, result(100, 100_000, 0)).running(&pod, &[4], progress(5, 5)),
    );
    let v = reg.views(&ij0);
    let before = compute(&ij0, &obs, &stage(&ij0, &obs, &v), &v, at(50));
    assert_eq!(before.progress.as_ref().unwrap().files, 405);
    let checkpoint = before.checkpoint.clone().unwrap();
    assert_eq!(checkpoint.copy.as_ref().unwrap().completed, "0-3");

    // The operator restarts: its passes are gone. The reconcile restores them from the status.
    let mut ij = ij0.clone();
    ij.status = Some(before);
    let again = Registry::default();
    again
        .ensure(&ij, "copy", 8, checkpoint.copy.as_ref(), None, Opening::Now)
        .unwrap();
    let v = again.views(&ij);
    let copy = v.copy.as_ref().unwrap();
    assert_eq!(
        (copy.sum.files, copy.counts.completed, copy.counts.pending),
        (400, 4, 4)
    );
    // The live worker has not reported to the new operator yet: its 5 files are not in the pass,
    // but the status does not go back to 400.
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(55));
    assert_eq!(st.phase, Some(Phase::Copying));
    assert_eq!(st.progress.as_ref().unwrap().files, 405);
    assert_eq!(st.shards.as_ref().unwrap().succeeded, 4);

    // It reports: it keeps shard 4, and its next shard is 5, not a completed one.
    let mut r = claim_request(&ij, "copy", &pod);
    r.holding = vec![4];
    r.room = 1;
    r.progress = progress(7, 7);
    assert_eq!(again.handle(r).unwrap().shards, vec![5]);
    let v = again.views(&ij);
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(60));
    assert_eq!(st.progress.as_ref().unwrap().files, 407);
    let sh = st.shards.unwrap();
    assert_eq!((sh.succeeded, sh.running, sh.pending), (4, 2, 2));

    // A new run starts from zero.
    ij.spec.run = 1;
    let st = compute(&ij, &empty(), &Stage::Scan, &no_passes(), at(60));
    assert!(st.progress.is_none() && st.checkpoint.is_none());
    assert_eq!(st.run, Some(1));
}

#[test]
fn verify_then_done_succeeds_and_keeps_transition_times() {
    let ij0 = fixture("three-ips.yaml");
    let (mut obs, v) = copied(&ij0, 3);
    assert!(matches!(stage(&ij0, &obs, &v), Stage::Verify(..)));
    let mut ij = ij0.clone();
    let verifying = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!(verifying.phase, Some(Phase::Verifying));
    assert_eq!(
        verifying.shards.as_ref().unwrap().pending,
        3,
        "shards of the verify pass"
    );
    ij.status = Some(verifying.clone());

    add_pass_job(&ij0, &mut obs, "verify", finished);
    let r = PodResult {
        verification: Some(VerificationCounts {
            checked: 10,
            matched: 9,
            mismatched: 1,
            repaired: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = views(
        &ij0,
        3,
        Some(&PassScript::all_done(3, result(10, 100, 0))),
        Some(&PassScript::all_done(3, r)),
    );
    let done = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(30));
    assert_eq!(done.phase, Some(Phase::Succeeded));
    let vc = done.verification.as_ref().unwrap();
    assert_eq!(
        (vc.checked, vc.matched, vc.repaired, vc.verified),
        (30, 27, 3, 30)
    );
    let ready = ingest_api::conditions::find(&done.conditions, ct::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.0),
        ("True", at(30))
    );
    let stalled = ingest_api::conditions::find(&done.conditions, ct::STALLED).unwrap();
    assert_eq!(
        stalled.last_transition_time.0,
        at(10),
        "Stalled stayed False: its time is kept"
    );
    assert_eq!(done.completion_time.as_ref().unwrap().0, at(30));
    assert_eq!(done.progress.as_ref().unwrap().percent, 100.0);
    let cp = done.checkpoint.as_ref().unwrap();
    assert_eq!(
        (
            cp.copy.as_ref().unwrap().completed.as_str(),
            cp.verify.as_ref().unwrap().completed.as_str()
        ),
        ("0-2", "0-2")
    );

    // Recomputing later does not change a finished status (so it is not rewritten).
    ij.status = Some(done.clone());
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(500)), done);
}

#[test]
fn fail_job_policy_stops_at_the_first_shard_lost_through_its_retries() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
    let mut obs = scanned(&ij, 8, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", running);
    // The Job holds no FailJob-specific limit: the pass decides when a shard is lost.
    let copy = pass_job(&ij, &obs, "copy");
    let spec = copy.spec.as_ref().unwrap();
    assert_eq!(
        (spec.max_failed_indexes, spec.backoff_limit_per_index),
        (None, Some(3))
    );

    let reg = Registry::default();
    let other = worker_pod_name(&ij, "copy", 1, "other");
    drive(
        &reg,
        &ij,
        "copy",
        8,
        &PassScript::done(0..6, result(1, 1, 0)).running(&other, &[7], progress(1, 1)),
    );
    // Shard 6: each pod that takes it is killed. Up to retriesPerShard (3) times it goes back to
    // the queue and the run goes on.
    for attempt in 0..4 {
        let s = stage(&ij, &obs, &reg.views(&ij));
        assert!(matches!(s, Stage::Copy(..)), "attempt {attempt}: {s:?}");
        let pod = worker_pod_name(&ij, "copy", 0, &format!("try{attempt}"));
        let mut r = claim_request(&ij, "copy", &pod);
        r.room = 1;
        assert_eq!(reg.handle(r).unwrap().shards, vec![6]);
        reg.workers_ended(&ij, "copy", [pod.as_str()]);
    }
    let v = reg.views(&ij);
    assert_eq!(v.copy.as_ref().unwrap().counts.lost, 1);
    let s = stage(&ij, &obs, &v);
    assert!(
        matches!(
            s,
            Stage::Stopped {
                failed_shards: 1,
                role: "copy",
                ..
            }
        ),
        "stopped while shard 7 is still being copied: {s:?}"
    );
    let st = compute(&ij, &obs, &s, &v, at(10));
    assert_eq!(st.phase, Some(Phase::Failed));
    let stalled = ingest_api::conditions::find(&st.conditions, ct::STALLED).unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", reasons::SHARD_FAILED)
    );
    assert!(
        stalled.message.starts_with("1 shard(s) of the copy pass were lost")
            && stalled.message.contains(
                "failure policy is FailJob; the run was stopped: no verify pass, the workers of 1 running Job(s) take no more work"
            ),
        "{}",
        stalled.message
    );
    assert_eq!(st.shards.as_ref().unwrap().failed, 1);
    let jobs = desired(&ij, &s, &settings()).unwrap();
    assert!(
        jobs_of(&jobs)
            .iter()
            .all(|j| j.labels()[labels::ROLE] == "scan"),
        "a stopped run creates no verify Job (and no other Job but the existing scan)"
    );
}

#[test]
fn continue_policy_fails_only_above_max_failed_files() {
    let ij = fixture("three-ips.yaml"); // Continue, maxFailedFiles 10
    let (mut obs, _) = copied(&ij, 3);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let copy = PassScript::all_done(3, result(10, 100, 0));
    let verify = PassScript::all_done(3, result(10, 10, 0)).with(0, result(10, 10, 4));
    let v = views(&ij, 3, Some(&copy), Some(&verify));
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Succeeded), 4));
    assert_eq!(ready_reason(&st), reasons::SUCCEEDED_WITH_FAILURES);
    let verify = verify.with(1, result(10, 10, 7));
    let v = views(&ij, 3, Some(&copy), Some(&verify));
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Failed), 11));
    assert_eq!(ready_reason(&st), reasons::TOO_MANY_FAILURES);
}

#[test]
fn failed_scan_and_missing_plan_fail_the_run() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 0, totals(), true);
    let st = compute(
        &ij,
        &obs,
        &stage(&ij, &obs, &no_passes()),
        &no_passes(),
        at(10),
    );
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(
        ingest_api::conditions::find(&st.conditions, ct::STALLED)
            .unwrap()
            .reason,
        reasons::SCAN_FAILED
    );
    let mut obs = scanned(&ij, 8, totals(), false);
    obs.plans.clear();
    assert!(
        matches!(stage(&ij, &obs, &no_passes()), Stage::ScanFailed(m) if m.contains("without storing a plan"))
    );
}

#[test]
fn worker_count_is_frozen_for_the_run() {
    let mut ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 8, totals(), false);
    ij.spec.workers = Some(5);
    let Stage::Copy(_, layout) = stage(&ij, &obs, &no_passes()) else {
        panic!("copy stage")
    };
    assert_eq!(layout.workers, 2, "the run started with 2 workers");
    assert_eq!(layout.servers, ["10.1.1.101"]);
    let copy = pass_job(&ij, &obs, "copy");
    assert_eq!(copy.spec.unwrap().parallelism, Some(2));
}

#[test]
fn a_scan_job_without_pods_points_at_its_events() {
    let ij = fixture("one-ip.yaml");
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let obs = Observed {
        jobs: vec![observed_job(jobs_of(&children)[0], false, false, "", "", 0)],
        ..Default::default()
    };
    let st = compute(
        &ij,
        &obs,
        &stage(&ij, &obs, &no_passes()),
        &no_passes(),
        at(5),
    );
    assert_eq!(st.phase, Some(Phase::Pending));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("kubectl describe job genomics-r0-scan"),
        "{:?}",
        st.message
    );
    assert!(
        !compute(&ij, &empty(), &Stage::Scan, &no_passes(), at(5))
            .message
            .unwrap()
            .contains("describe"),
        "before the Job exists, nothing to point at"
    );
}

/// The verify result of shard `s` with `n` failed entries (`s<s>/f<i>`).
fn failing(s: u32, n: u64) -> PodResult {
    let mut r = result(10, 10, n);
    r.failures = (0..n)
        .map(|i| FileFailure {
            path: format!("s{s}/f{i}"),
            reason: "EACCES".into(),
        })
        .collect();
    r
}

/// `three-ips.yaml` (Continue, maxFailedFiles 10) with both passes completed over 3 shards and
/// both Jobs finished; verify shard `s` found `failed[s]` failed entries.
fn finished_with_failures(failed: [u64; 3]) -> (IngestJob, Observed, Views) {
    let ij = fixture("three-ips.yaml");
    let (mut obs, _) = copied(&ij, 3);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let mut verify = PassScript::default();
    for (s, n) in failed.into_iter().enumerate() {
        verify = verify.with(s as u32, failing(s as u32, n));
    }
    let v = views(
        &ij,
        3,
        Some(&PassScript::all_done(3, result(10, 100, 0))),
        Some(&verify),
    );
    (ij, obs, v)
}

#[test]
fn a_finished_runs_record_survives_a_restart_job_deletion_and_policy_edits() {
    let (mut ij, mut obs, v) = finished_with_failures([4, 7, 0]);
    let record = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(30));
    assert_eq!(
        (record.phase, record.failed_files),
        (Some(Phase::Failed), 11)
    );
    assert_eq!(
        ingest_api::conditions::find(&record.conditions, ct::STALLED)
            .unwrap()
            .reason,
        reasons::TOO_MANY_FAILURES
    );
    assert!(ingest_operator::status::recorded(Some(&record), 0));
    ij.status = Some(record.clone());

    // The operator restarts: it sets up no pass for a recorded run, and the record stays.
    assert_eq!(
        compute(
            &ij,
            &obs,
            &stage(&ij, &obs, &no_passes()),
            &no_passes(),
            at(900)
        ),
        record
    );
    // Editing the failure policy afterwards does not rewrite the verdict.
    ij.spec.failure_policy.max_failed_files = Some(1000);
    ij.metadata.generation = Some(5);
    assert_eq!(
        compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(901)),
        record
    );
    // The Jobs themselves deleted by hand: still the same record, and nothing is created again.
    obs.jobs.clear();
    assert_eq!(
        compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(902)),
        record
    );

    // A new run starts a new record.
    ij.spec.run = 1;
    let next = compute(
        &ij,
        &empty(),
        &stage(&ij, &empty(), &no_passes()),
        &no_passes(),
        at(1000),
    );
    assert_eq!((next.run, next.phase), (Some(1), Some(Phase::Pending)));
    assert_eq!(next.failed_files, 0);
    assert!(next.completion_time.is_none() && next.failures.is_empty());
}

/// `status.totals` carries what the scan pod put in the plan summary (histograms, largest
/// directories, hard links); the next run's totals estimate its time from the recorded Copy pass.
#[test]
fn status_totals_carry_the_plans_analytics_and_the_next_run_an_estimate_from_the_copy_pass() {
    use ingest_api::{DirectoryTotals, HardLinks, HistogramRow};
    let analytics = Totals {
        files: 1000,
        directories: 10,
        bytes: 30_000,
        size_histogram: vec![HistogramRow {
            bucket: "[16 B, 256 B)".into(),
            files: 1000,
        }],
        age_histogram: vec![HistogramRow {
            bucket: "under 1 day".into(),
            files: 1000,
        }],
        largest_directories: vec![DirectoryTotals {
            path: "shots/sq010".into(),
            entries: 900,
            bytes: 27_000,
        }],
        hard_links: Some(HardLinks {
            inodes: 2,
            paths: 5,
        }),
        ..Default::default()
    };
    let (mut ij, mut obs, v) = finished_with_failures([0, 0, 0]);
    obs.plans = vec![plan_meta(&ij, 3, analytics.clone())];
    ij.status = Some(IngestJobStatus {
        run: Some(0),
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0))),
        ..Default::default()
    });
    let record = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(100));
    // Through the plan summary's annotation as the scan pod wrote it; nothing measured before.
    assert_eq!(record.totals.as_ref(), Some(&analytics));
    let pass = &record.passes[0];
    assert_eq!(
        (pass.mode, pass.files, pass.bytes),
        (ingest_api::PassMode::Copy, 60, 300)
    );

    // Run 1 over the same tree: run 0 moved 0.6 files/s and 3 B/s over its 100 s, so its 30,000
    // bytes take 10,000 s (its 1000 files only 1667 s).
    ij.status = Some(record);
    ij.spec.run = 1;
    let obs = scanned(&ij, 3, analytics.clone(), false);
    let st = compute(
        &ij,
        &obs,
        &stage(&ij, &obs, &no_passes()),
        &no_passes(),
        at(200),
    );
    assert_eq!(st.phase, Some(Phase::Copying));
    assert_eq!(
        st.totals,
        Some(Totals {
            estimated_seconds: Some(10_000),
            ..analytics
        })
    );
}

#[test]
fn failures_never_shrink_within_a_pass_when_a_restarted_operator_resumes_from_its_checkpoint() {
    // Verify running: shards 0 and 1 completed with failures, shard 2 still being verified.
    let ij0 = fixture("three-ips.yaml");
    let (mut obs, _) = copied(&ij0, 3);
    add_pass_job(&ij0, &mut obs, "verify", running);
    let verify = PassScript::default()
        .with(0, failing(0, 2))
        .with(1, failing(1, 3))
        .running(
            &worker_pod_name(&ij0, "verify", 0, "x"),
            &[2],
            progress(1, 1),
        );
    let v = views(
        &ij0,
        3,
        Some(&PassScript::all_done(3, result(10, 100, 0))),
        Some(&verify),
    );
    let mut ij = ij0.clone();
    let first = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(30));
    assert_eq!(
        (first.phase, first.failed_files, first.failures.len()),
        (Some(Phase::Verifying), 5, 5)
    );
    let cp = first.checkpoint.clone().unwrap();
    ij.status = Some(first);

    // The restarted operator's passes come from the checkpoint, which keeps counts but not the
    // failure list (the status has it).
    let again = Registry::default();
    again
        .ensure(&ij, "copy", 3, cp.copy.as_ref(), None, Opening::Now)
        .unwrap();
    again
        .ensure(&ij, "verify", 3, cp.verify.as_ref(), None, Opening::Now)
        .unwrap();
    let v = again.views(&ij);
    assert!(v.verify.as_ref().unwrap().sum.failures.is_empty());
    let later = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(40));
    assert_eq!(later.phase, Some(Phase::Verifying));
    assert_eq!(later.failed_files, 5);
    assert_eq!(later.failures.len(), 5, "{:?}", later.failures);
    assert!(later.failures.iter().any(|f| f.path == "s1/f2"));
}

#[test]
fn worker_jobs_pod_failure_policy_has_no_fail_index_fails_the_job_on_exit_2_and_ignores_disruptions()
 {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    let rules = |j: &Job| {
        j.spec
            .as_ref()
            .unwrap()
            .pod_failure_policy
            .as_ref()
            .unwrap()
            .rules
            .iter()
            .map(|r| {
                let on = match (&r.on_exit_codes, &r.on_pod_conditions) {
                    (Some(e), None) => format!("exit {} {:?}", e.operator, e.values),
                    (None, Some(c)) => {
                        format!("{}={}", c[0].type_, c[0].status.as_deref().unwrap())
                    }
                    _ => panic!("one of onExitCodes and onPodConditions"),
                };
                format!("{} on {on}", r.action)
            })
            .collect::<Vec<_>>()
    };
    // A worker's entries' outcomes go to the operator with each shard: it never exits 1 for failed
    // entries, so no index is failed for them; other exits are retried (backoffLimitPerIndex) and
    // the pod's claims go back to the pass's queue. A worker that found a destination server
    // unresponsive (exit 4) handed its claims back; no pod of this Job replaces it (it would
    // mount the hung server again): the pass's next Job does (see
    // `a_server_found_unresponsive_makes_the_pass_a_new_job_without_it`).
    for role in ["copy", "verify"] {
        let j = pass_job(&ij, &obs, role);
        assert_eq!(
            rules(&j),
            [
                "Ignore on DisruptionTarget=True",
                "FailJob on exit In [2]",
                "FailIndex on exit In [4]"
            ],
            "{role}"
        );
        let spec = j.spec.as_ref().unwrap();
        assert_eq!(
            (spec.max_failed_indexes, spec.backoff_limit_per_index),
            (None, Some(3)),
            "{role}"
        );
        assert_eq!(
            (
                spec.pod_replacement_policy.as_deref(),
                spec.template
                    .spec
                    .as_ref()
                    .unwrap()
                    .restart_policy
                    .as_deref()
            ),
            (Some("Failed"), Some("Never")),
            "what a pod failure policy requires"
        );
    }
    let scan = &obs.jobs[0];
    assert_eq!(
        rules(scan),
        ["Ignore on DisruptionTarget=True", "FailJob on exit In [2]"],
        "the scan's exit 1 (plan not stored) is retried"
    );

    // Exit 2 in a copy pod fails the copy Job as a whole: under Continue too, the run stops.
    add_pass_job(&ij, &mut obs, "copy", |j| {
        let mut j = observed_job(j, false, true, "0-2", "", 0);
        let c = &mut j.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
        c.reason = Some("PodFailurePolicy".into());
        c.message = Some("Container copy for pod ingest/media-r0-copy-4-x failed with exit code 2 matching FailJob rule at index 4".into());
        j
    });
    let v = views(
        &ij,
        6,
        Some(&PassScript::done([0, 1], result(1, 1, 0))),
        None,
    );
    let s = stage(&ij, &obs, &v);
    assert!(matches!(&s, Stage::Stopped { role: "copy", .. }), "{s:?}");
    let st = compute(&ij, &obs, &s, &v, at(10));
    assert_eq!(st.phase, Some(Phase::Failed));
    let msg = st.message.unwrap();
    assert!(
        msg.contains("the copy Job media-r0-copy failed (PodFailurePolicy: Container copy")
            && msg.contains("no verify pass"),
        "{msg}"
    );
}

#[test]
fn a_scan_stopped_by_exit_2_says_so() {
    let ij = fixture("one-ip.yaml");
    let mut obs = scanned(&ij, 0, totals(), true);
    let c = &mut obs.jobs[0]
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0];
    c.reason = Some("PodFailurePolicy".into());
    c.message = Some("Container scan for pod ingest/genomics-r0-scan-x failed with exit code 2 matching FailJob rule at index 1".into());
    let st = compute(
        &ij,
        &obs,
        &stage(&ij, &obs, &no_passes()),
        &no_passes(),
        at(10),
    );
    assert_eq!(st.phase, Some(Phase::Failed));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("the scan stopped on unusable input (exit 2): Container scan"),
        "{:?}",
        st.message
    );
}

/// `ij` scanned into `shards` shards by a scan that could not read `unreadable`.
fn scanned_with_errors(ij: &IngestJob, shards: u64, unreadable: &[&str]) -> Observed {
    let mut obs = scanned(ij, shards, totals(), false);
    obs.plans = vec![plan_meta_with(
        ij,
        shards,
        totals(),
        unreadable
            .iter()
            .map(|p| FileFailure {
                path: (*p).into(),
                reason: "scan: Permission denied (os error 13)".into(),
            })
            .collect(),
    )];
    obs
}

#[test]
fn entries_the_scan_could_not_read_count_against_the_failure_policy() {
    // Continue without a limit: the run goes on and succeeds with the entry listed.
    let mut ij = fixture("one-ip.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut obs = scanned_with_errors(&ij, 2, &["locked"]);
    assert!(matches!(stage(&ij, &obs, &no_passes()), Stage::Copy(..)));
    add_pass_job(&ij, &mut obs, "copy", finished);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let all = PassScript::all_done(2, result(5, 50, 0));
    let v = views(&ij, 2, Some(&all), Some(&all));
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Succeeded), 1));
    assert_eq!(ready_reason(&st), reasons::SUCCEEDED_WITH_FAILURES);
    assert_eq!(st.failures[0].path, "locked");

    // maxFailedFiles 0: the same run is TooManyFailures.
    ij.spec.failure_policy.max_failed_files = Some(0);
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!(st.phase, Some(Phase::Failed));
    assert_eq!(
        ingest_api::conditions::find(&st.conditions, ct::STALLED)
            .unwrap()
            .reason,
        reasons::TOO_MANY_FAILURES
    );

    // FailJob: the run stops after the scan; no copy Job is created.
    let mut ij = fixture("one-ip.yaml");
    ij.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
    let obs = scanned_with_errors(&ij, 2, &["locked", "gone"]);
    let s = stage(&ij, &obs, &no_passes());
    assert!(matches!(&s, Stage::Stopped { role: "scan", .. }), "{s:?}");
    assert!(
        jobs_of(&desired(&ij, &s, &settings()).unwrap())
            .iter()
            .all(|j| j.labels()[labels::ROLE] == "scan")
    );
    let st = compute(&ij, &obs, &s, &no_passes(), at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Failed), 2));
    let msg = st.message.unwrap();
    assert!(
        msg.starts_with("the scan could not read 2 entries and the failure policy is FailJob")
            && msg.contains("no copy or verify pass"),
        "{msg}"
    );
}

#[test]
fn a_shard_lost_through_its_retries_fails_the_run_and_failed_entries_in_completed_shards_count_by_entry()
 {
    let ij = fixture("three-ips.yaml"); // Continue, maxFailedFiles 10
    let (mut obs, _) = copied(&ij, 3);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let copy = PassScript::all_done(3, result(10, 100, 0));

    // Shard 0 completed with two failed entries: accounted entry by entry, within maxFailedFiles.
    let verify = PassScript::all_done(3, verified(10)).with(0, failing(0, 2));
    let v = views(&ij, 3, Some(&copy), Some(&verify));
    let s = stage(&ij, &obs, &v);
    assert!(
        matches!(
            s,
            Stage::Done {
                failed_shards: 0,
                ..
            }
        ),
        "{s:?}"
    );
    let st = compute(&ij, &obs, &s, &v, at(10));
    assert_eq!(
        (st.phase, st.failed_files),
        (Some(Phase::Succeeded), 2),
        "{st:?}"
    );
    assert_eq!(ready_reason(&st), reasons::SUCCEEDED_WITH_FAILURES);

    // Shard 0's workers were killed through all its retries: its entries were never accounted for.
    let verify = PassScript::done([1, 2], verified(10)).lost([0]);
    let v = views(&ij, 3, Some(&copy), Some(&verify));
    let s = stage(&ij, &obs, &v);
    assert!(
        matches!(
            s,
            Stage::Done {
                failed_shards: 1,
                ..
            }
        ),
        "{s:?}"
    );
    let st = compute(&ij, &obs, &s, &v, at(10));
    assert_eq!(st.phase, Some(Phase::Failed), "{st:?}");
    assert_eq!(ready_reason(&st), reasons::SHARD_FAILED);
    assert_eq!(st.shards.as_ref().unwrap().failed, 1);
    assert!(
        st.message.as_deref().unwrap().contains("not accounted"),
        "{:?}",
        st.message
    );
}

#[test]
fn with_verify_none_a_lost_copy_shard_fails_the_run() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::None;
    let mut obs = scanned(&ij, 3, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", finished);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let v = views(
        &ij,
        3,
        Some(&PassScript::done([0, 2], result(10, 100, 0)).lost([1])),
        Some(&PassScript::all_done(3, PodResult::default())),
    );
    let s = stage(&ij, &obs, &v);
    assert!(matches!(s, Stage::Done { .. }), "{s:?}");
    let st = compute(&ij, &obs, &s, &v, at(10));
    assert_eq!(
        (st.phase, ready_reason(&st)),
        (Some(Phase::Failed), reasons::SHARD_FAILED.to_owned()),
        "the settle pass set times; the copy never finished shard 1: {st:?}"
    );
}

#[test]
fn entries_only_in_the_destination_mean_it_is_not_identical() {
    let ij = fixture("three-ips.yaml");
    let (mut obs, _) = copied(&ij, 3);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let mut r = result(10, 10, 0);
    r.verification = Some(VerificationCounts {
        checked: 12,
        matched: 10,
        extraneous: 2,
        verified: 10,
        ..Default::default()
    });
    let v = views(
        &ij,
        3,
        Some(&PassScript::all_done(3, result(10, 100, 0))),
        Some(&PassScript::all_done(3, verified(10)).with(2, r)),
    );
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!(st.phase, Some(Phase::Failed), "{st:?}");
    assert_eq!(ready_reason(&st), reasons::DESTINATION_DIFFERS);
    let m = st.message.unwrap();
    assert!(
        m.contains("2 entries only in the destination") && !m.contains("destination identical"),
        "{m}"
    );
}

#[test]
fn a_copy_that_moves_nothing_for_the_stall_timeout_is_stalled_until_it_moves_again() {
    let mut ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 3, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", running);
    // A live worker whose counts do not move (a hard mount that stopped answering): it keeps
    // sending the same progress.
    let reg = Registry::default();
    let pod = worker_pod_name(&ij, "copy", 0, "stuck");
    drive(
        &reg,
        &ij,
        "copy",
        3,
        &PassScript::default().running(&pod, &[0], progress(40, 4_000)),
    );
    let stalled = |st: &IngestJobStatus| {
        let c = ingest_api::conditions::find(&st.conditions, ct::STALLED).unwrap();
        (c.status == "True").then(|| c.reason.clone())
    };
    let step = |ij: &mut IngestJob, t| {
        let v = reg.views(ij);
        let st = compute(ij, &obs, &stage(ij, &obs, &v), &v, at(t));
        let events = ingest_operator::reconcile::events_for(ij.status.as_ref(), &st);
        ij.status = Some(st.clone());
        (st, events.into_iter().map(|e| e.reason).collect::<Vec<_>>())
    };
    let (st, _) = step(&mut ij, 10);
    assert_eq!((st.phase, stalled(&st)), (Some(Phase::Copying), None));
    assert_eq!(st.progress.as_ref().unwrap().files, 40);
    let since = st.progress.as_ref().unwrap().last_progress_time.clone();
    assert_eq!(since.as_ref().map(|t| t.0), Some(at(10)));
    // Within the default 60 s: nothing to say.
    let (st, ev) = step(&mut ij, 69);
    assert_eq!((stalled(&st), ev.len()), (None, 0), "{st:?}");
    // At 60 s without a file: Stalled, one Warning, the phase unchanged; said once.
    let (st, ev) = step(&mut ij, 70);
    assert_eq!(
        stalled(&st).as_deref(),
        Some(reasons::NO_PROGRESS),
        "{st:?}"
    );
    assert_eq!(
        (st.phase, ev),
        (Some(Phase::Copying), vec![reasons::NO_PROGRESS.to_string()])
    );
    let (_, ev) = step(&mut ij, 200);
    assert!(ev.is_empty());
    // Files move again: no longer stalled, measured from now.
    let mut r = claim_request(&ij, "copy", &pod);
    r.holding = vec![0];
    r.progress = progress(41, 4_100);
    reg.handle(r).unwrap();
    let (st, ev) = step(&mut ij, 205);
    assert_eq!(
        (stalled(&st), ev),
        (None, vec!["ProgressResumed".to_string()])
    );
    assert_eq!(
        st.progress.unwrap().last_progress_time.map(|t| t.0),
        Some(at(205))
    );
    // A shorter timeout in the spec applies.
    ij.spec.stall_timeout_seconds = Some(10);
    let (st, _) = step(&mut ij, 216);
    assert_eq!(stalled(&st).as_deref(), Some(reasons::NO_PROGRESS));
}

/// One scenario of [`claims_verdicts`].
struct Case {
    name: &'static str,
    /// `verify.mode: None` (else three-ips.yaml's Checksum).
    verify_none: bool,
    /// `failurePolicy.action: FailJob` (else three-ips.yaml's Continue, maxFailedFiles 10).
    fail_job: bool,
    copy: PassScript,
    /// Every copy worker pod ended (the Job is Complete), else they run.
    copy_job_done: bool,
    /// The verify pass, once the copy pass let it start.
    verify: Option<PassScript>,
    verify_job_done: bool,
    phase: Phase,
    reason: &'static str,
    /// Words of the status message.
    says: &'static str,
}

#[test]
fn claims_verdicts() {
    const SHARDS: u64 = 6;
    let ok = || PassScript::all_done(SHARDS, result(10, 1000, 0));
    let identical = || PassScript::all_done(SHARDS, verified(10));
    let base = || Case {
        name: "",
        verify_none: false,
        fail_job: false,
        copy: ok(),
        copy_job_done: true,
        verify: Some(identical()),
        verify_job_done: true,
        phase: Phase::Succeeded,
        reason: reasons::SUCCEEDED,
        says: "",
    };
    let cases = [
        Case {
            name: "every shard of both passes completed",
            says: "copied and verified, destination identical: 1000 files (976.6 KiB)",
            ..base()
        },
        Case {
            name: "a verify shard lost through its retries",
            verify: Some(PassScript::done(0..5, verified(10)).lost([5])),
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "1 shard(s) ended without a result after their retries",
            ..base()
        },
        Case {
            name: "a copy worker's unusable input stops the run",
            copy: PassScript::done([0, 1], result(10, 1000, 0))
                .running("media-r0-copy-2-x", &[2], progress(1, 1))
                .unusable("--dest /ingest/dest-1: Read-only file system (os error 30)"),
            copy_job_done: false,
            verify: None,
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "a copy worker stopped on unusable input: --dest /ingest/dest-1: Read-only file system (os error 30); the run was stopped: no verify pass",
            ..base()
        },
        Case {
            name: "failed entries within maxFailedFiles",
            verify: Some(
                identical()
                    .with(1, result(10, 10, 3))
                    .with(4, result(10, 10, 4)),
            ),
            reason: reasons::SUCCEEDED_WITH_FAILURES,
            says: "7 entries failed (listed in failures); everything else copied and verified",
            ..base()
        },
        Case {
            name: "failed entries beyond maxFailedFiles",
            verify: Some(
                identical()
                    .with(1, result(10, 10, 5))
                    .with(4, result(10, 10, 6)),
            ),
            phase: Phase::Failed,
            reason: reasons::TOO_MANY_FAILURES,
            says: "11 entries failed (listed in failures), more than maxFailedFiles (10)",
            ..base()
        },
        Case {
            name: "verify None: the copy Job ended (all workers gone) with shards never claimed",
            verify_none: true,
            copy: PassScript::done(0..3, result(10, 1000, 0)),
            verify: Some(PassScript::all_done(SHARDS, PodResult::default())),
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "3 shard(s) ended without a result after their retries",
            ..base()
        },
        Case {
            name: "the copy Job ended with shards never claimed: the verify pass copies them",
            copy: PassScript::done(0..3, result(10, 1000, 0)),
            says: "copied and verified, destination identical",
            ..base()
        },
        Case {
            name: "the verify Job ended (all workers gone) with shards never claimed",
            verify: Some(PassScript::done(0..4, verified(10))),
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "2 shard(s) ended without a result after their retries",
            ..base()
        },
        Case {
            name: "FailJob: the first lost copy shard stops the run while others copy",
            fail_job: true,
            copy: PassScript::done(0..2, result(10, 1000, 0))
                .lost([2])
                .running("media-r0-copy-3-x", &[3], progress(1, 1)),
            copy_job_done: false,
            verify: None,
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "1 shard(s) of the copy pass were lost (their workers ended through all retries) and the failure policy is FailJob; the run was stopped: no verify pass, the workers of 1 running Job(s) take no more work",
            ..base()
        },
        Case {
            name: "FailJob: the copy Job ended with shards never claimed",
            fail_job: true,
            copy: PassScript::done(0..5, result(10, 1000, 0)),
            verify: None,
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "1 shard(s) of the copy pass were lost (every worker ended) and the failure policy is FailJob",
            ..base()
        },
        Case {
            name: "FailJob: a copy shard completed with a failed entry stops the run",
            fail_job: true,
            copy: PassScript::done(0..2, result(10, 1000, 0))
                .with(2, result(10, 1000, 1))
                .running("media-r0-copy-3-x", &[3], progress(1, 1)),
            copy_job_done: false,
            verify: None,
            phase: Phase::Failed,
            reason: reasons::SHARD_FAILED,
            says: "1 entry failed in the copy pass and the failure policy is FailJob; the run was stopped: no verify pass",
            ..base()
        },
    ];
    for c in cases {
        let mut ij = fixture("three-ips.yaml");
        if c.verify_none {
            ij.spec.verify.mode = ingest_api::VerifyMode::None;
        }
        if c.fail_job {
            ij.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
            ij.spec.failure_policy.max_failed_files = None;
        }
        let mut obs = scanned(&ij, SHARDS, totals(), false);
        let job = |done: bool| move |j: &Job| if done { finished(j) } else { running(j) };
        add_pass_job(&ij, &mut obs, "copy", job(c.copy_job_done));
        if c.verify.is_some() {
            add_pass_job(&ij, &mut obs, "verify", job(c.verify_job_done));
        }
        let v = views(&ij, SHARDS, Some(&c.copy), c.verify.as_ref());
        let s = stage(&ij, &obs, &v);
        let st = compute(&ij, &obs, &s, &v, at(100));
        let msg = st.message.clone().unwrap_or_default();
        assert_eq!(
            (st.phase, ready_reason(&st)),
            (Some(c.phase), c.reason.to_owned()),
            "{}: {s:?}: {msg}",
            c.name
        );
        assert!(msg.contains(c.says), "{}: {msg}", c.name);
        assert!(
            st.completion_time.is_some(),
            "{}: the run is finished",
            c.name
        );
    }
}

#[test]
fn the_record_waits_for_the_last_passs_workers_to_exit_so_their_reports_are_complete() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.report = Some(ingest_api::job::ReportTarget {
        destination_path: Some("vfxt-ingest-reports".into()),
        ..Default::default()
    });
    let mut obs = scanned(&ij, 4, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "0", "", 0)
    });
    add_pass_job(&ij, &mut obs, "verify", |j| {
        observed_job(j, false, false, "", "", 1)
    });
    let done = PassScript::all_done(4, result(1, 1, 0));
    let v = views(&ij, 4, Some(&done), Some(&done));
    // Every verify shard is done, but a verify worker is still running (it writes its report when
    // it exits): no verdict yet.
    obs.pods.push(worker_pod(&ij, "verify", 0, "a", "Running"));
    assert!(matches!(stage(&ij, &obs, &v), Stage::Verify(..)));
    // With no reports to point at (no `spec.report`), nothing is left to wait for: every figure
    // of the verdict is in the pass.
    let mut unreported = ij.clone();
    unreported.spec.report = None;
    assert!(matches!(
        stage(&unreported, &obs, &v),
        Stage::Done {
            failed_shards: 0,
            ..
        }
    ));
    // It exited: the run is done. A worker pod that never started does not hold the record up.
    obs.pods = vec![
        worker_pod(&ij, "verify", 0, "a", "Succeeded"),
        worker_pod(&ij, "verify", 1, "b", "Pending"),
    ];
    assert!(matches!(
        stage(&ij, &obs, &v),
        Stage::Done {
            failed_shards: 0,
            ..
        }
    ));
    // Nor does a worker that found a server hung and left: its process may never end (threads
    // stuck on a hard mount), and its report ends with what it gave back.
    let reg = Registry::default();
    drive(&reg, &ij, "copy", 4, &done);
    reg.ensure(&ij, "verify", 4, None, None, Opening::Now)
        .unwrap();
    let stuck = worker_pod_name(&ij, "verify", 2, "c");
    let mut r = claim_request(&ij, "verify", &stuck);
    r.unresponsive = Some(ingest_api::claims::UnresponsiveMount {
        mount: "/ingest/dest-0".into(),
        left: 1,
        why: "1 operation(s) waiting 60 s with none finishing".into(),
    });
    reg.handle(r).unwrap();
    let mut r = claim_request(&ij, "verify", &worker_pod_name(&ij, "verify", 0, "a"));
    r.done = (0..4)
        .map(|shard| ingest_api::claims::ShardDone {
            shard,
            result: result(1, 1, 0),
        })
        .collect();
    reg.handle(r).unwrap();
    let v = reg.views(&ij);
    obs.pods = vec![
        worker_pod(&ij, "verify", 0, "a", "Succeeded"),
        worker_pod(&ij, "verify", 2, "c", "Running"),
    ];
    assert!(
        matches!(stage(&ij, &obs, &v), Stage::Done { .. }),
        "{:?}",
        stage(&ij, &obs, &v)
    );
    // Any other running verify worker still holds it up.
    obs.pods.push(worker_pod(&ij, "verify", 1, "b", "Running"));
    assert!(matches!(stage(&ij, &obs, &v), Stage::Verify(..)));
}

/// Once every copy shard is handed out, the verify pass is made closed and its Job created:
/// its workers start during the copy's last shards and are held; the copy's end opens the pass
/// and the held worker gets its shards at once. Not for `FailJob` (a failure stops the run before
/// verify) nor a mirror (a prune pass may come first).
#[tokio::test(start_paused = true)]
async fn the_verify_workers_start_during_the_copys_last_shards_and_work_when_it_ends() {
    use ingest_operator::reconcile::set_up_passes;
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 4, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 2)
    });
    let reg = Registry::default();
    let roles = |obs: &Observed, reg: &Registry| {
        let v = set_up_passes(&ij, obs, reg).unwrap();
        let st = stage(&ij, obs, &v);
        let jobs: Vec<String> = role_jobs_all(&desired(&ij, &st, &settings()).unwrap());
        (v.verify.is_some(), jobs)
    };
    assert_eq!(roles(&obs, &reg), (false, vec!["copy".to_owned()]));
    let (w0, w1) = (
        worker_pod_name(&ij, "copy", 0, "a"),
        worker_pod_name(&ij, "copy", 1, "b"),
    );
    let mut r = claim_request(&ij, "copy", &w0);
    r.room = 3;
    assert_eq!(reg.handle(r).unwrap().shards, vec![0, 1, 2]);
    assert_eq!(
        roles(&obs, &reg),
        (false, vec!["copy".to_owned()]),
        "a shard is still to hand out"
    );
    let mut r = claim_request(&ij, "copy", &w1);
    r.room = 3;
    assert_eq!(reg.handle(r).unwrap().shards, vec![3]);
    // Every shard handed out: the verify pass exists, closed, and its Job is desired.
    let (made, jobs) = roles(&obs, &reg);
    assert!(made);
    assert_eq!(jobs, ["copy", "verify"]);
    assert!(matches!(stage(&ij, &obs, &reg.views(&ij)), Stage::Copy(..)));
    add_pass_job(&ij, &mut obs, "verify", |j| {
        observed_job(j, false, false, "", "", 6)
    });
    // A verify worker asks: nothing yet, and its answer is held.
    let mut ask = claim_request(&ij, "verify", &worker_pod_name(&ij, "verify", 0, "v"));
    ask.room = 4;
    let held = reg.handle_held(ask, ingest_operator::claims::HOLD);
    tokio::pin!(held);
    assert!(futures::poll!(&mut held).is_pending());
    // The copy ends: the next reconcile opens the verify pass, and the held worker gets work.
    for (w, shards) in [(&w0, vec![0, 1, 2]), (&w1, vec![3])] {
        let mut r = claim_request(&ij, "copy", w);
        r.done = shards
            .into_iter()
            .map(|shard| ingest_api::claims::ShardDone {
                shard,
                result: result(1, 1, 0),
            })
            .collect();
        reg.handle(r).unwrap();
    }
    assert!(
        futures::poll!(&mut held).is_pending(),
        "not before the reconcile opens it"
    );
    let v = set_up_passes(&ij, &obs, &reg).unwrap();
    assert!(matches!(stage(&ij, &obs, &v), Stage::Verify(..)));
    let t0 = tokio::time::Instant::now();
    let answer = held.await.unwrap();
    assert_eq!(answer.shards, vec![0, 1, 2, 3]);
    assert_eq!(t0.elapsed(), std::time::Duration::ZERO, "at once");

    // FailJob: no verify workers before the copy ends.
    let mut fail_job = fixture("three-ips.yaml");
    fail_job.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
    let obs = scanned(&fail_job, 1, totals(), false);
    let reg = Registry::default();
    set_up_passes(&fail_job, &obs, &reg).unwrap();
    let mut r = claim_request(&fail_job, "copy", &w0);
    r.room = 1;
    assert_eq!(reg.handle(r).unwrap().shards, vec![0]);
    let v = set_up_passes(&fail_job, &obs, &reg).unwrap();
    assert!(v.verify.is_none());
    assert_eq!(
        role_jobs_all(&desired(&fail_job, &stage(&fail_job, &obs, &v), &settings()).unwrap()),
        ["copy"]
    );
}

/// The roles of the worker Jobs among `children`, in order.
fn role_jobs_all(children: &[Child]) -> Vec<String> {
    jobs_of(children)
        .into_iter()
        .filter_map(|j| j.labels().get(labels::ROLE).cloned())
        .filter(|r| r != "scan")
        .collect()
}

/// A copy worker found server 2 hung (exit 4 after telling the claims endpoint): the copy pass
/// gets a new Job, `-x1`, whose pods neither mount server 2 nor write through it; the first Job
/// stays (its other workers go on, through the servers that answer). The verify pass starts
/// with the copy pass's list: its first Job is already `-x1`. The status names the server.
#[test]
fn a_server_found_unresponsive_makes_the_pass_a_new_job_without_it() {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 3)
    });
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 6, None, None, Opening::Now)
        .unwrap();
    let hung = worker_pod_name(&ij, "copy", 2, "abcde");
    let mut r = claim_request(&ij, "copy", &hung);
    r.room = 1;
    let given = reg.handle(r).unwrap().shards;
    assert_eq!(given.len(), 1);
    let mut r = claim_request(&ij, "copy", &hung);
    r.holding = given;
    r.unresponsive = Some(ingest_api::claims::UnresponsiveMount {
        mount: "/ingest/dest-2".into(),
        left: 2,
        why: "3 operation(s) waiting 60 s with none finishing".into(),
    });
    let answer = reg.handle(r).unwrap();
    assert_eq!(answer.avoid, ["/ingest/dest-2"]);
    let v = reg.views(&ij);
    assert_eq!(v.copy.as_ref().unwrap().counts.running, 0, "handed back");

    let s = stage(&ij, &obs, &v);
    let Stage::Copy(_, layout) = &s else {
        panic!("{s:?}")
    };
    let children = desired(&ij, &s, &settings()).unwrap();
    let copy: Vec<&Job> = jobs_of(&children)
        .into_iter()
        .filter(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some("copy"))
        .collect();
    assert_eq!(copy.len(), 1);
    assert_eq!(copy[0].name_any(), "media-r0-copy-x1");
    assert_eq!(layout.job_name(&ij, 0, "copy"), "media-r0-copy-x1");
    let pod = copy[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .filter(|n| n.starts_with("dest-"))
        .collect();
    assert_eq!(volumes, ["dest-0", "dest-1"]);
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(
        args.contains("--dest /ingest/dest-0 --dest /ingest/dest-1 ") && !args.contains("dest-2"),
        "{args}"
    );
    // Its pods' names start with the pass's Job name: the claims endpoint takes their tokens.
    assert!(copy[0].name_any().starts_with("media-r0-copy-"));

    let st = compute(&ij, &obs, &s, &v, at(30));
    let servers: Vec<_> = st
        .servers
        .iter()
        .map(|x| (x.server.as_str(), x.state))
        .collect();
    use ingest_api::ServerState::*;
    assert_eq!(
        servers,
        [
            ("10.1.1.101", Some(Healthy)),
            ("10.1.1.102", Some(Healthy)),
            ("10.1.1.103", Some(Unresponsive))
        ]
    );
    let c = ingest_api::conditions::find(&st.conditions, "ServersResponding").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ServerUnresponsive")
    );
    assert!(
        c.message.contains("10.1.1.103") && c.message.contains("60 s"),
        "{}",
        c.message
    );
    let events = ingest_operator::reconcile::events_for(ij.status.as_ref(), &st);
    assert!(events.iter().any(|e| e.reason == "ServerUnresponsive"));

    // The copy pass finishes through the other two; the verify pass starts without server 2.
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, "fghij"));
    r.done = (0..6)
        .map(|shard| ingest_api::claims::ShardDone {
            shard,
            result: result(1, 1, 0),
        })
        .collect();
    reg.handle(r).unwrap();
    reg.mark_persisted(&ij, "copy");
    reg.ensure(&ij, "verify", 6, None, None, Opening::Now)
        .unwrap();
    let v = reg.views(&ij);
    let s = stage(&ij, &obs, &v);
    assert!(matches!(s, Stage::Verify(..)), "{s:?}");
    let children = desired(&ij, &s, &settings()).unwrap();
    let names: Vec<String> = jobs_of(&children).iter().map(|j| j.name_any()).collect();
    assert!(
        names.contains(&"media-r0-verify-x1".to_owned()),
        "{names:?}"
    );
}

/// The first server found unresponsive: the pass's new Job neither mounts it nor writes its
/// reports through it (a report under a mount point not mounted would stay in the container),
/// and its pods, which run beside the first Job's with the same indexes, write files of their own.
#[test]
fn a_new_job_without_the_first_server_writes_its_reports_through_another_to_files_of_its_own() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.report =
        Some(serde_json::from_value(serde_json::json!({"destinationPath": "reports"})).unwrap());
    let mut obs = scanned(&ij, 6, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, false, false, "", "", 3)
    });
    let first = pass_job(&ij, &obs, "copy");
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 6, None, None, Opening::Now)
        .unwrap();
    let hung = worker_pod_name(&ij, "copy", 0, "abcde");
    let mut r = claim_request(&ij, "copy", &hung);
    r.unresponsive = Some(ingest_api::claims::UnresponsiveMount {
        mount: dest_mount(0),
        left: 2,
        why: "1 operation(s) waiting 60 s with none finishing".into(),
    });
    reg.handle(r).unwrap();
    let v = reg.views(&ij);
    let s = stage(&ij, &obs, &v);
    let children = desired(&ij, &s, &settings()).unwrap();
    let copy = &role_jobs(&children, "copy")[0];
    assert_eq!(copy.name_any(), format!("{}-x1", first.name_any()));
    let dir = format!("reports/{}/run-0", ij.name_any());
    assert_eq!(
        arg_after(&first, "--report"),
        Some(format!(
            "{}/{dir}/copy-$(JOB_COMPLETION_INDEX).jsonl.gz",
            dest_mount(0)
        ))
    );
    assert_eq!(
        arg_after(copy, "--report"),
        Some(format!(
            "{}/{dir}/copy-x1-$(JOB_COMPLETION_INDEX).jsonl.gz",
            dest_mount(1)
        ))
    );
    assert!(!has_volume(copy, "dest-0") && has_volume(copy, "dest-1"));
}

/// `spec.suspend`: the pass hands out no shard (a worker's held shard still finishes and counts),
/// the status says Suspended (not Stalled, however long nothing moves), and clearing it resumes.
/// Neither way changes what the run's Jobs are built from.
#[test]
fn suspend_holds_the_claims_says_so_and_resumes() {
    let mut ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 4, totals(), false);
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 4, None, None, Opening::Now)
        .unwrap();
    let a = worker_pod_name(&ij, "copy", 0, "aaaaa");
    let mut r = claim_request(&ij, "copy", &a);
    r.room = 1;
    let held = reg.handle(r).unwrap().shards;
    assert_eq!(held, [0]);

    let hash = ingest_operator::stage::spec_hash(&ij.spec);
    ij.spec.suspend = true;
    assert_eq!(ingest_operator::stage::spec_hash(&ij.spec), hash);
    reg.ensure(&ij, "copy", 4, None, None, Opening::Now)
        .unwrap();
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 1, "bbbbb"));
    r.room = 1;
    let answer = reg.handle(r).unwrap();
    assert_eq!(
        (answer.shards.len(), answer.state),
        (0, ingest_api::claims::PassState::Wait)
    );
    let mut r = claim_request(&ij, "copy", &a);
    r.done = vec![ingest_api::claims::ShardDone {
        shard: 0,
        result: result(3, 30, 0),
    }];
    r.room = 1;
    let answer = reg.handle(r).unwrap();
    assert_eq!(
        (answer.shards.len(), answer.state),
        (0, ingest_api::claims::PassState::Wait)
    );
    assert_eq!(reg.view(&ij, "copy").unwrap().counts.completed, 1);

    let v = reg.views(&ij);
    let s = stage(&ij, &obs, &v);
    let st = compute(&ij, &obs, &s, &v, at(10));
    // An hour later, nothing moved: still Suspended, not Stalled.
    ij.status = Some(st);
    let st = compute(&ij, &obs, &s, &v, at(3600));
    assert_eq!(st.phase, Some(Phase::Copying));
    let cond = |t: &str| {
        ingest_api::conditions::find(&st.conditions, t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            cond(ct::READY).status.as_str(),
            cond(ct::READY).reason.as_str()
        ),
        ("False", "Suspended")
    );
    assert_eq!(cond(ct::RECONCILING).status, "False");
    assert_eq!(cond(ct::STALLED).status, "False");
    assert!(
        st.message.as_deref().unwrap().contains("spec.suspend"),
        "{:?}",
        st.message
    );

    ij.spec.suspend = false;
    reg.ensure(&ij, "copy", 4, None, None, Opening::Now)
        .unwrap();
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 1, "bbbbb"));
    r.room = 2;
    assert_eq!(reg.handle(r).unwrap().shards, [1, 2]);
}

#[test]
fn a_scan_moves_on_from_its_committed_plan_before_its_pod_or_job_says_it_is_done() {
    // The scan stores the plan's chunk 0 last (its commit marker) and a later attempt never
    // replaces it: the copy starts from it without waiting for the pod's exit to be reported
    // (a kubelet takes a second or so) nor for the Job's Complete condition (a Job-controller
    // batch after that).
    let ij = fixture("one-ip.yaml");
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let scan = jobs_of(&children)[0];
    let mut obs = Observed {
        jobs: vec![observed_job(scan, false, false, "", "", 1)],
        ..Default::default()
    };
    obs.pods = vec![worker_pod(&ij, labels::ROLE_SCAN, 0, "a", "Running")];
    assert_eq!(
        stage(&ij, &obs, &no_passes()),
        Stage::Scan,
        "still scanning"
    );
    // A failed pod is retried by its Job: not the end of the scan either.
    obs.pods = vec![worker_pod(&ij, labels::ROLE_SCAN, 0, "a", "Failed")];
    assert_eq!(stage(&ij, &obs, &no_passes()), Stage::Scan);
    obs.pods
        .push(worker_pod(&ij, labels::ROLE_SCAN, 0, "b", "Running"));
    obs.plans = vec![plan_meta(&ij, 2, totals())];
    assert!(
        matches!(stage(&ij, &obs, &no_passes()), Stage::Copy(..)),
        "the plan committed, its pod still running: {:?}",
        stage(&ij, &obs, &no_passes())
    );
    // What befalls the scan Job after the commit changes no plan: the run goes on.
    obs.jobs = vec![observed_job(scan, false, true, "", "", 0)];
    assert!(matches!(stage(&ij, &obs, &no_passes()), Stage::Copy(..)));
    obs.jobs = vec![observed_job(scan, false, false, "", "", 1)];
    obs.pods
        .push(worker_pod(&ij, labels::ROLE_SCAN, 0, "c", "Succeeded"));
    // A plan the cache does not show yet is read from the API server before any verdict.
    obs.plans.clear();
    assert_eq!(
        ingest_operator::observe::plan_to_confirm(&ij, &obs).as_deref(),
        Some("genomics-r0-plan-0")
    );
    // Another run's scan pod says nothing about this one.
    let mut other = ij.clone();
    other.spec.run = 1;
    obs.plans = vec![plan_meta(&ij, 2, totals())];
    obs.jobs = vec![observed_job(
        jobs_of(&desired(&other, &Stage::Scan, &settings()).unwrap())[0],
        false,
        false,
        "",
        "",
        1,
    )];
    assert_eq!(stage(&other, &obs, &no_passes()), Stage::Scan);
}

/// `spec.dryRun`: the scan, then a verify pass that only compares (`--dry-run`), no copy Job at
/// all; the switch is fixed when the scan starts; the verdict says what a pass would do and
/// never "identical", and the differences are not failures.
#[test]
fn a_dry_run_scans_then_only_compares_and_says_what_a_pass_would_do() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.dry_run = true;
    let scan = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let annotations = jobs_of(&scan)[0].metadata.annotations.clone().unwrap();
    assert_eq!(annotations["ingest.vfxt.dev/dry-run"], "true");
    let mut obs = scanned(&ij, 3, totals(), false);
    let st = stage(&ij, &obs, &no_passes());
    assert!(matches!(st, Stage::Verify(..)), "no copy pass: {st:?}");
    let children = desired(&ij, &st, &settings()).unwrap();
    assert!(
        role_jobs(&children, "copy").is_empty(),
        "a dry run copies nothing"
    );
    let verify = role_jobs(&children, "verify");
    assert_eq!(verify.len(), 1);
    assert!(args(&verify[0]).iter().any(|a| a == "--dry-run"));
    // Switched off in the middle of the run: the run stays what it started as.
    let mut flipped = ij.clone();
    flipped.spec.dry_run = false;
    assert!(matches!(
        stage(&flipped, &obs, &no_passes()),
        Stage::Verify(..)
    ));

    add_pass_job(&ij, &mut obs, "verify", finished);
    let mut r = result(0, 0, 0);
    r.verification = Some(VerificationCounts {
        checked: 12,
        matched: 7,
        missing: 3,
        mismatched: 1,
        extraneous: 1,
        verified: 7,
        differing_bytes: 3 << 20,
        ..Default::default()
    });
    let v = views(&ij, 3, None, Some(&PassScript::all_done(3, r)));
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(10));
    assert_eq!(st.phase, Some(Phase::Succeeded), "{st:?}");
    assert_eq!(ready_reason(&st), "DryRun");
    let m = st.message.clone().unwrap();
    assert!(
        m.starts_with("dry run, nothing written: a pass would create 9 entries, update 3 entries and write 9.0 MiB; 3 entries only in the destination"),
        "{m}"
    );
    assert!(!m.contains("identical"), "{m}");
    assert_eq!(st.failed_files, 0);
    // The run is in the job's history, and stays there when the next run starts.
    assert_eq!(st.passes.len(), 1);
    let p = &st.passes[0];
    assert_eq!(
        (p.run, p.mode, p.reason.as_str()),
        (0, ingest_api::PassMode::DryRun, "DryRun")
    );
    assert_eq!(p.verification.as_ref().unwrap().missing, 9);
    ij.status = Some(st);
    ij.spec.dry_run = false;
    ij.spec.run = 1;
    let next = compute(&ij, &empty(), &Stage::Scan, &no_passes(), at(20));
    assert_eq!(next.passes.len(), 1, "{next:?}");
}

/// `spec.limits` is for the whole job: each worker pod gets its share, rounded up.
#[test]
fn the_jobs_rate_limits_are_divided_among_its_worker_pods() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.workers = Some(3);
    ij.spec.limits = Some(ingest_api::Limits {
        bytes_per_second: Some(100 << 20),
        files_per_second: Some(10),
        ..Default::default()
    });
    let obs = scanned(&ij, 9, totals(), false);
    let st = stage(&ij, &obs, &no_passes());
    let copies = role_jobs(&desired(&ij, &st, &settings()).unwrap(), "copy");
    let a = args(&copies[0]);
    assert!(
        a.windows(2)
            .any(|w| w == ["--bytes-per-second", "34952534"]),
        "{a:?}"
    );
    assert!(
        a.windows(2).any(|w| w == ["--files-per-second", "4"]),
        "{a:?}"
    );
}

/// A shard's copy result in a mirror: `found` entries only in the destination.
fn found(shard: u32, n: u64) -> PodResult {
    PodResult {
        mirror: Some(ingest_api::report::MirrorResult {
            found: (n > 0).then_some((shard, n)).into_iter().collect(),
            ..Default::default()
        }),
        ..result(10, 100, 0)
    }
}

/// A mirror (`maxDeletes: 5`) of 4 shards whose copy pass ended, shards 0 and 2 having found 3
/// and 2 entries only in the destination: the stage is Prune, within the limit.
struct Mirrored {
    ij: IngestJob,
    obs: Observed,
    reg: Registry,
    stage: Stage,
    /// What each prune shard may delete.
    budgets: BTreeMap<u32, u64>,
    /// The prune Job as `desired` builds it.
    prune: Job,
    /// How the copy pass ended.
    copy: PassScript,
}

fn mirrored() -> Mirrored {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.mode = ingest_api::job::Mode::Mirror;
    ij.spec.max_deletes = Some(IntOrString::Int(5));
    let mut obs = scanned(&ij, 4, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "", "", 4)
    });
    let copy = PassScript::done([1, 3], found(0, 0))
        .with(0, found(0, 3))
        .with(2, found(2, 2));
    let reg = Registry::default();
    drive(&reg, &ij, "copy", 4, &copy);

    let s = stage(&ij, &obs, &reg.views(&ij));
    let Stage::Prune(_, layout) = &s else {
        panic!("{s:?}")
    };
    let budgets = match &layout.deletes {
        Some(ingest_job::mirror::Decision::Prune {
            budgets,
            entries: 5,
        }) => budgets.clone(),
        d => panic!("{d:?}"),
    };
    assert_eq!(budgets, BTreeMap::from([(0, 3), (2, 2)]));
    let children = desired(&ij, &s, &settings()).unwrap();
    let prune = jobs_of(&children)
        .into_iter()
        .find(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some("prune"))
        .expect("a prune Job")
        .clone();
    Mirrored {
        ij,
        obs,
        reg,
        stage: s,
        budgets,
        prune,
        copy,
    }
}

/// `mode: Mirror` in the cluster: once the copy pass ended, the operator weighs what its shards
/// found only in the destination; within `maxDeletes` a prune pass runs (its own Job, `--phase
/// prune`), handing out only the shards that found something, each with what it may delete;
/// then the verify pass. The record says what was deleted and that the pass was a Mirror.
/// Above the limit there is no prune pass, and the record says why nothing was deleted.
#[test]
fn a_mirror_prunes_only_the_shards_that_found_something_then_verifies() {
    let Mirrored {
        mut ij,
        mut obs,
        reg,
        stage: s,
        budgets,
        prune,
        copy,
    } = mirrored();
    let args = prune
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--phase", "prune"]) && args.contains(&"--mirror".into()),
        "{args:?}"
    );
    assert_eq!(
        compute(&ij, &obs, &s, &reg.views(&ij), at(20)).phase,
        Some(Phase::Copying)
    );

    // Its workers get only those shards, each with its budget.
    reg.ensure(&ij, "prune", 4, None, Some(&budgets), Opening::Now)
        .unwrap();
    let pod = worker_pod_name(&ij, "prune", 0, "p");
    let mut r = claim_request(&ij, "prune", &pod);
    r.room = 8;
    let answer = reg.handle(r).unwrap();
    assert_eq!(answer.shards, [0, 2]);
    assert_eq!(answer.deletes, budgets);
    let mut r = claim_request(&ij, "prune", &pod);
    r.done = [(0, 3), (2, 2)]
        .into_iter()
        .map(|(shard, deleted)| ingest_api::claims::ShardDone {
            shard,
            result: PodResult {
                mirror: Some(ingest_api::report::MirrorResult {
                    deleted,
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();
    reg.handle(r).unwrap();
    obs.jobs.push(observed_job(&prune, true, false, "", "", 1));
    let s = stage(&ij, &obs, &reg.views(&ij));
    assert!(matches!(&s, Stage::Verify(_, l) if l.prunes()), "{s:?}");

    // The verify pass finds the destination identical.
    let verified = PodResult {
        verification: Some(ingest_api::job::VerificationCounts {
            checked: 10,
            matched: 10,
            verified: 10,
            ..Default::default()
        }),
        ..result(10, 0, 0)
    };
    drive(&reg, &ij, "verify", 4, &PassScript::all_done(4, verified));
    let views = reg.views(&ij);
    let mut verify_job = pass_job(&ij, &obs, "verify");
    verify_job = observed_job(&verify_job, true, false, "", "", 4);
    obs.jobs.push(verify_job);
    let s = stage(&ij, &obs, &views);
    assert!(matches!(s, Stage::Done { .. }), "{s:?}");
    let st = compute(&ij, &obs, &s, &views, at(60));
    assert_eq!(st.phase, Some(Phase::Succeeded), "{:?}", st.message);
    let m = st.mirror.as_ref().unwrap();
    assert_eq!((m.found, m.deleted, m.refused.as_ref()), (5, 5, None));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("5 entries only in the destination deleted (Mirror)"),
        "{:?}",
        st.message
    );
    let rec = st.passes.last().unwrap();
    assert_eq!(
        (rec.mode, rec.deleted),
        (ingest_api::job::PassMode::Mirror, 5)
    );
    assert_eq!(
        st.checkpoint
            .as_ref()
            .unwrap()
            .prune
            .as_ref()
            .unwrap()
            .completed,
        "0-3",
        "the shards without a budget count as done"
    );

    // Over the limit: no prune pass, and the verify pass comes next.
    ij.spec.max_deletes = Some(IntOrString::String("4".into()));
    let reg = Registry::default();
    drive(&reg, &ij, "copy", 4, &copy);
    let s = stage(&ij, &obs, &reg.views(&ij));
    let Stage::Verify(_, layout) = &s else {
        panic!("{s:?}")
    };
    let Some(ingest_job::mirror::Decision::Refused(why)) = &layout.deletes else {
        panic!("{:?}", layout.deletes)
    };
    assert!(why.contains("more than maxDeletes"), "{why}");
    assert!(!layout.passes().contains(&"prune"));
}

/// The prune pass moves no files or bytes: its deletions, told as entries through a server, are
/// its progress (a deletion of many entries is not a stall), and a prune whose server stops
/// answering is Stalled after the timeout. A prune worker that found its server hung hands its
/// shards back; the status names the server, and the verify pass after it starts without it.
#[test]
fn a_prune_pass_progresses_by_its_deletions_and_a_server_hung_in_it_stays_avoided() {
    let Mirrored {
        mut ij,
        mut obs,
        reg,
        budgets,
        prune,
        ..
    } = mirrored();
    obs.jobs.push(observed_job(&prune, false, false, "", "", 1));
    reg.ensure(&ij, "prune", 4, None, Some(&budgets), Opening::Now)
        .unwrap();
    let pod = worker_pod_name(&ij, "prune", 0, "p");
    let mut r = claim_request(&ij, "prune", &pod);
    r.room = 8;
    let held = reg.handle(r).unwrap().shards;
    assert_eq!(held, [0, 2]);
    // The worker's message: what went through server 0 so far (listings and unlinks).
    let message = claim_request(&ij, "prune", &pod);
    let tell = |entries: u64| {
        let mut r = message.clone();
        r.holding = held.clone();
        r.mounts = vec![ingest_api::claims::MountFigures {
            mount: "/ingest/dest-0".into(),
            tasks: entries,
            entries,
            ..Default::default()
        }];
        reg.handle(r).unwrap()
    };
    let stalled = |st: &IngestJobStatus| {
        let c = ingest_api::conditions::find(&st.conditions, ct::STALLED).unwrap();
        (c.status == "True").then(|| c.reason.clone())
    };
    let step = |ij: &mut IngestJob, t| {
        let v = reg.views(ij);
        let s = stage(ij, &obs, &v);
        assert!(matches!(s, Stage::Prune(..)), "{s:?}");
        let st = compute(ij, &obs, &s, &v, at(t));
        ij.status = Some(st.clone());
        st
    };
    tell(100);
    let st = step(&mut ij, 20);
    assert_eq!((st.phase, stalled(&st)), (Some(Phase::Copying), None));
    // Deleting for longer than the timeout, the files and bytes still: not stalled.
    tell(5_000);
    step(&mut ij, 60);
    tell(9_000);
    let st = step(&mut ij, 100);
    assert_eq!(stalled(&st), None, "{st:?}");
    assert_eq!(
        st.progress
            .as_ref()
            .unwrap()
            .last_progress_time
            .as_ref()
            .map(|t| t.0),
        Some(at(100))
    );
    // Nothing through the server for the timeout (the worker's heartbeat goes on): Stalled.
    tell(9_000);
    let st = step(&mut ij, 159);
    assert_eq!(stalled(&st), None, "{st:?}");
    let st = step(&mut ij, 160);
    assert_eq!(
        stalled(&st).as_deref(),
        Some(reasons::NO_PROGRESS),
        "{st:?}"
    );

    // The worker's watchdog finds server 0 hung: the shards go back, the status names it.
    let mut r = claim_request(&ij, "prune", &pod);
    r.holding = held.clone();
    r.unresponsive = Some(ingest_api::claims::UnresponsiveMount {
        mount: "/ingest/dest-0".into(),
        left: 2,
        why: "1 operation(s) waiting 60 s with none finishing".into(),
    });
    assert_eq!(reg.handle(r).unwrap().avoid, ["/ingest/dest-0"]);
    let v = reg.views(&ij);
    assert_eq!(v.prune.as_ref().unwrap().counts.running, 0, "handed back");
    let st = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(170));
    let state = |st: &IngestJobStatus, i: usize| st.servers[i].state;
    assert_eq!(
        state(&st, 0),
        Some(ingest_api::ServerState::Unresponsive),
        "{:?}",
        st.servers
    );
    assert_eq!(state(&st, 1), Some(ingest_api::ServerState::Healthy));

    // Another worker prunes through the servers that answer; the verify pass avoids server 0.
    let mut r = claim_request(&ij, "prune", &worker_pod_name(&ij, "prune", 1, "q"));
    r.done = held
        .iter()
        .map(|&shard| ingest_api::claims::ShardDone {
            shard,
            result: PodResult {
                mirror: Some(ingest_api::report::MirrorResult {
                    deleted: budgets[&shard],
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();
    reg.handle(r).unwrap();
    reg.mark_persisted(&ij, "prune");
    reg.ensure(&ij, "verify", 4, None, None, Opening::Now)
        .unwrap();
    let mut r = claim_request(&ij, "verify", &worker_pod_name(&ij, "verify", 0, "v"));
    r.room = 1;
    assert_eq!(reg.handle(r).unwrap().avoid, ["/ingest/dest-0"]);
}

/// `verify.scope: Changed`: copy workers say when they began writing (destination clock); the
/// pass keeps the earliest, in its checkpoint too, and the verify Job's workers read the content
/// of files written since then, less the margin. Without a copy worker's word they read all.
#[test]
fn a_changed_scope_verify_gets_the_copy_passs_earliest_write_less_the_margin() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.verify.mode = ingest_api::VerifyMode::Checksum;
    ij.spec.verify.scope = ingest_api::job::VerifyScope::Changed;
    let mut obs = scanned(&ij, 2, totals(), false);
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "", "", 2)
    });
    let verify_args = |reg: &Registry| {
        let s = stage(&ij, &obs, &reg.views(&ij));
        assert!(matches!(s, Stage::Verify(..)), "{s:?}");
        let children = desired(&ij, &s, &settings()).unwrap();
        let job = jobs_of(&children)
            .into_iter()
            .find(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some("verify"))
            .unwrap()
            .clone();
        job.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    };
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 2, None, None, Opening::Now)
        .unwrap();
    for (pod, started) in [("a", 1_000_500), ("b", 1_000_000), ("c", 1_000_900)] {
        let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, pod));
        r.write_started = Some(started);
        reg.handle(r).unwrap();
    }
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, "a"));
    r.done = (0..2)
        .map(|shard| ingest_api::claims::ShardDone {
            shard,
            result: result(1, 1, 0),
        })
        .collect();
    reg.handle(r).unwrap();
    let cp = reg.view(&ij, "copy").unwrap().checkpoint;
    assert_eq!(cp.write_started, Some(1_000_000));
    let want = format!("--content-changed-since={}", 1_000_000 - 300);
    assert!(verify_args(&reg).contains(&want), "{:?}", verify_args(&reg));
    // A restarted operator has it from the status checkpoint.
    let again = Registry::default();
    again
        .ensure(&ij, "copy", 2, Some(&cp), None, Opening::Now)
        .unwrap();
    assert!(verify_args(&again).contains(&want));

    // No copy worker said when it began: the verify reads every file.
    let none = Registry::default();
    drive(
        &none,
        &ij,
        "copy",
        2,
        &PassScript::all_done(2, result(1, 1, 0)),
    );
    assert!(
        !verify_args(&none)
            .iter()
            .any(|a| a.starts_with("--content-changed-since"))
    );
}

/// The passes after the copy start knowing each server's pace in it (`--mount-pace`, in `--dest`
/// order, `-` for a server with no finished task), as local `run`'s do; the copy pass itself has
/// nothing to start from.
#[test]
fn verify_workers_start_with_the_copy_passs_pace_of_each_server() {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 2, totals(), false);
    let job_of = |obs: &Observed, reg: &Registry, role: &str| {
        let s = stage(&ij, obs, &reg.views(&ij));
        let children = desired(&ij, &s, &settings()).unwrap();
        jobs_of(&children)
            .into_iter()
            .find(|j| j.labels().get(labels::ROLE).map(String::as_str) == Some(role))
            .unwrap_or_else(|| panic!("no {role} Job in {s:?}"))
            .clone()
    };
    let figures = |server: usize, tasks: u64, micros: u64| {
        let mut latency = vec![0; ingest_job::latency::BUCKETS];
        latency[ingest_job::latency::bucket_of(micros)] = tasks;
        ingest_api::claims::MountFigures {
            mount: format!("/ingest/dest-{server}"),
            tasks,
            entries: tasks,
            bytes: 0,
            latency,
        }
    };
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 2, None, None, Opening::Now)
        .unwrap();
    // Two workers measured servers 0 and 2 (server 2 eight times slower); none finished a task
    // on server 1.
    for (pod, mounts) in [
        ("a", vec![figures(0, 4, 1_000), figures(2, 1, 8_000)]),
        ("b", vec![figures(0, 4, 1_000), figures(2, 1, 8_000)]),
    ] {
        let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, pod));
        r.mounts = mounts;
        reg.handle(r).unwrap();
    }
    let copy = args(&job_of(&obs, &reg, "copy"));
    assert!(
        !copy.iter().any(|a| a.starts_with("--mount-pace")),
        "{copy:?}"
    );
    drive(
        &reg,
        &ij,
        "copy",
        2,
        &PassScript::all_done(2, result(1, 1, 0)),
    );
    add_pass_job(&ij, &mut obs, "copy", |j| {
        observed_job(j, true, false, "", "", 2)
    });
    let verify = job_of(&obs, &reg, "verify");
    let us = |micros: u64| {
        ingest_job::latency::time_per_entry(&figures(0, 1, micros).latency, 1).unwrap()
    };
    let want = format!("--mount-pace={},-,{}", us(1_000), us(8_000));
    assert!(
        args(&verify).contains(&want),
        "{want} not in {:?}",
        args(&verify)
    );
    // In the order of the pod's destinations, which its index turns alike.
    assert_eq!(
        args_after(&verify, "--dest"),
        ["/ingest/dest-0", "/ingest/dest-1", "/ingest/dest-2"]
    );
}

/// `spec.limits` while a pass runs: every claims answer carries the worker's share of the job's
/// limits now: divided among the workers that report, following a window of the schedule, and
/// an edit of the IngestJob (seen at the next reconcile).
#[test]
fn claims_answers_carry_each_workers_share_of_the_limits_now() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.limits = Some(ingest_api::Limits {
        bytes_per_second: Some(300),
        ..Default::default()
    });
    let reg = Registry::default();
    reg.ensure(&ij, "copy", 6, None, None, Opening::Now)
        .unwrap();
    // The claims of one run: the same IngestJob identity whatever its spec says.
    let id = ij.clone();
    let ask = |reg: &Registry, pod: &str| {
        let mut r = claim_request(&id, "copy", &worker_pod_name(&id, "copy", 0, pod));
        r.room = 1;
        reg.handle(r).unwrap().limits.unwrap()
    };
    assert_eq!(ask(&reg, "a").bytes_per_second, Some(300), "alone");
    ask(&reg, "b");
    assert_eq!(ask(&reg, "c").bytes_per_second, Some(100), "one of three");
    // The user raises the limit; a window that always holds limits entries instead.
    ij.spec.limits = Some(ingest_api::Limits {
        bytes_per_second: Some(600),
        windows: vec![ingest_api::job::LimitWindow {
            days: vec!["All".into()],
            start: "00:00".into(),
            end: "00:00".into(),
            files_per_second: Some(30),
            ..Default::default()
        }],
        time_zone: Some("Europe/Berlin".into()),
        ..Default::default()
    });
    reg.ensure(&ij, "copy", 6, None, None, Opening::Now)
        .unwrap();
    let r = ask(&reg, "a");
    assert_eq!((r.bytes_per_second, r.files_per_second), (None, Some(10)));
    // Limits removed: unlimited from the next answer.
    ij.spec.limits = None;
    reg.ensure(&ij, "copy", 6, None, None, Opening::Now)
        .unwrap();
    let mut r = claim_request(&ij, "copy", &worker_pod_name(&ij, "copy", 0, "a"));
    r.room = 1;
    assert_eq!(reg.handle(r).unwrap().limits, None);
}

/// A later pass of a migration (a delta) finds most files up to date: the status and the run's
/// record say how many, so the rest is what the pass wrote. Through a restart too: the copy
/// pass's checkpoint carries the count.
#[test]
fn a_delta_pass_records_how_many_files_it_found_up_to_date() {
    let ij = fixture("three-ips.yaml");
    let (mut obs, _) = copied(&ij, 3);
    add_pass_job(&ij, &mut obs, "verify", finished);
    let delta = PodResult {
        up_to_date: 9,
        ..result(10, 100, 0)
    };
    let v = views(
        &ij,
        3,
        Some(&PassScript::all_done(3, delta)),
        Some(&PassScript::all_done(3, result(0, 0, 0))),
    );
    let record = compute(&ij, &obs, &stage(&ij, &obs, &v), &v, at(30));
    let p = record.progress.as_ref().unwrap();
    assert_eq!((p.files, p.up_to_date), (30, 27));
    let pass = &record.passes[0];
    assert_eq!((pass.files, pass.up_to_date), (30, 27));
    let message = record.message.clone().unwrap_or_default();
    assert!(
        message.contains("27 of them found already up to date"),
        "{message}"
    );
    // The copy pass's checkpoint, as a restarted operator restores it.
    let cp = v.copy.as_ref().unwrap().checkpoint.clone();
    assert_eq!(cp.up_to_date, 27);
    let back = ingest_job::Checkpoint::<PodResult>::from(&cp);
    assert_eq!((back.sum.files, back.sum.up_to_date), (30, 27));
}
