//! Pure pipeline tests from YAML fixtures: stage → desired children → status, without any API server.

mod common;

use common::*;
use ingest_api::constants::{conditions as ct, labels, reasons};
use ingest_api::report::PodResult;
use ingest_api::{FileFailure, Phase, ThreadsPerWorker, Totals, VerificationCounts};
use ingest_operator::desired::{Child, DEST_MOUNT, REPORT_MOUNT, SOURCE_MOUNT, desired};
use ingest_operator::stage::{Stage, stage};
use ingest_operator::status::compute;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Volume;
use kube::ResourceExt;

fn totals() -> Totals {
    Totals {
        files: 1000,
        directories: 10,
        bytes: 1_000_000,
    }
}

fn volume<'a>(job: &'a Job, name: &str) -> &'a Volume {
    let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == name)
        .unwrap()
}

fn env(job: &Job, name: &str) -> Option<String> {
    let c = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    c.env
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

fn args(job: &Job) -> Vec<String> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap()
}

#[test]
fn fresh_job_gets_identity_and_a_scan_job_that_mounts_the_source_read_only() {
    let ij = fixture("one-ip.yaml");
    assert_eq!(stage(&ij, &empty()), Stage::Scan);
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let kinds: Vec<String> = children.iter().map(Child::describe).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount/genomics-pods",
            "Role/genomics-pods",
            "RoleBinding/genomics-pods",
            "Job/genomics-r0-scan"
        ]
    );
    let scan = jobs_of(&children)[0];
    let src = volume(scan, "source").nfs.as_ref().unwrap();
    assert_eq!(
        (src.server.as_str(), src.path.as_str(), src.read_only),
        ("10.0.0.5", "/export/genomics", Some(true))
    );
    assert!(
        scan.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .len()
            == 1,
        "the scan never mounts the destination"
    );
    let a = args(scan);
    assert_eq!(
        &a[..3],
        ["scan", &format!("{SOURCE_MOUNT}/2019"), "--cluster"]
    );
    assert!(a.windows(2).any(|w| w == ["--shards", "8"]));
    assert!(
        a.windows(2).any(|w| w == ["--server", "10.1.1.101"]),
        "the plan is dealt to the spec's servers"
    );
    assert!(a.windows(2).any(|w| w == ["--workers", "2"]));
    let owner = &scan.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("IngestJob", Some(true))
    );
    assert_eq!(scan.labels()[labels::ROLE], "scan");
}

#[test]
fn one_ip_copy_job_mounts_that_server_and_takes_all_shards() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 8, totals(), false);
    let st = stage(&ij, &obs);
    assert!(matches!(st, Stage::Copy(..)), "{st:?}");
    let children = desired(&ij, &st, &settings()).unwrap();
    let copies: Vec<&Job> = jobs_of(&children)
        .into_iter()
        .filter(|j| j.labels()[labels::ROLE] == "copy")
        .collect();
    assert_eq!(copies.len(), 1);
    let j = copies[0];
    let spec = j.spec.as_ref().unwrap();
    assert_eq!(
        (
            spec.completion_mode.as_deref(),
            spec.completions,
            spec.parallelism
        ),
        (Some("Indexed"), Some(8), Some(2))
    );
    assert_eq!(spec.backoff_limit_per_index, Some(3));
    let dst = volume(j, "dest").nfs.as_ref().unwrap();
    assert_eq!(
        (dst.server.as_str(), dst.path.as_str()),
        ("10.1.1.101", "/nfs")
    );
    assert_eq!(
        (
            arg_after(j, "--server-index").as_deref(),
            arg_after(j, "--index").as_deref()
        ),
        (Some("0"), Some("$(JOB_COMPLETION_INDEX)"))
    );
    assert_eq!(
        env(j, "INGEST_PLAN_PREFIX").as_deref(),
        Some("genomics-r0-plan")
    );
    assert_eq!(
        env(j, "INGEST_JOB_UID").as_deref(),
        Some("6f1c2f0e-0000-4000-8000-000000000001")
    );
    let a = args(j);
    assert!(
        a.windows(2)
            .any(|w| w == ["--dest", &format!("{DEST_MOUNT}/genomics/2019")])
    );
    assert!(a.windows(2).any(|w| w == ["--threads", "32"]));
    let sc = j
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .security_context
        .clone()
        .unwrap();
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
fn three_ips_each_copy_job_mounts_its_own_server() {
    let ij = fixture("three-ips.yaml");
    let obs = scanned(&ij, 100, totals(), false);
    let children = desired(&ij, &stage(&ij, &obs), &settings()).unwrap();
    let copies: Vec<&Job> = jobs_of(&children)
        .into_iter()
        .filter(|j| j.labels()[labels::ROLE] == "copy")
        .collect();
    assert_eq!(copies.len(), 3);
    let mut completions = 0;
    for (i, j) in copies.iter().enumerate() {
        let server = format!("10.1.1.10{}", i + 1);
        assert_eq!(
            volume(j, "dest").nfs.as_ref().unwrap().server,
            server,
            "{}",
            j.name_any()
        );
        let src = volume(j, "source")
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(
            (src.claim_name.as_str(), src.read_only),
            ("old-filer", Some(true))
        );
        assert_eq!(arg_after(j, "--server-index"), Some(i.to_string()));
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
        assert_eq!(j.spec.as_ref().unwrap().parallelism, Some(2));
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("registry.example/vfxt-ingest:1.0")
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "ingest");
        assert_eq!(j.annotations()["ingest.vfxt.dev/server"], server);
        completions += j.spec.as_ref().unwrap().completions.unwrap();
    }
    assert_eq!(completions, 100, "every shard is assigned exactly once");
}

#[test]
fn threads_per_worker_auto_gives_copy_and_verify_pods_threads_auto_and_the_scan_a_count() {
    let role_jobs = |children: &[Child], role: &str| -> Vec<Job> {
        jobs_of(children)
            .into_iter()
            .filter(|j| j.labels()[labels::ROLE] == role)
            .cloned()
            .collect()
    };
    let mut ij = fixture("auto-threads.yaml");
    assert_eq!(ij.spec.threads_per_worker, ThreadsPerWorker::Auto);

    // The scan only reads the source and takes a number: the default count.
    let scan = role_jobs(&desired(&ij, &Stage::Scan, &settings()).unwrap(), "scan");
    assert_eq!(arg_after(&scan[0], "--threads").as_deref(), Some("16"));

    let mut obs = scanned(&ij, 6, totals(), false);
    let copies = role_jobs(
        &desired(&ij, &stage(&ij, &obs), &settings()).unwrap(),
        "copy",
    );
    assert_eq!(copies.len(), 3);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    let verify_stage = stage(&ij, &obs);
    assert!(
        matches!(verify_stage, Stage::Verify(..)),
        "{verify_stage:?}"
    );
    let verifies = role_jobs(&desired(&ij, &verify_stage, &settings()).unwrap(), "verify");
    assert_eq!(verifies.len(), 3);
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
    let obs = scanned(&ij, 6, totals(), false);
    let copies = role_jobs(
        &desired(&ij, &stage(&ij, &obs), &settings()).unwrap(),
        "copy",
    );
    assert!(
        copies
            .iter()
            .all(|j| arg_after(j, "--threads").as_deref() == Some("48"))
    );
}

#[test]
fn verify_repair_false_reaches_every_worker_as_no_repair() {
    let mut ij = fixture("auto-threads.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    let verify_stage = stage(&ij, &obs);
    assert!(
        matches!(verify_stage, Stage::Verify(..)),
        "{verify_stage:?}"
    );
    let no_repair = |ij: &ingest_api::IngestJob| -> Vec<bool> {
        jobs_of(&desired(ij, &verify_stage, &settings()).unwrap())
            .into_iter()
            .filter(|j| j.labels()[labels::ROLE] == "verify")
            .map(|j| args(j).iter().any(|a| a == "--no-repair"))
            .collect()
    };
    assert!(ij.spec.verify.repair, "repairs by default");
    assert_eq!(no_repair(&ij), [false; 3]);
    ij.spec.verify.repair = false;
    assert_eq!(no_repair(&ij), [true; 3]);
}

fn mounts(job: &Job) -> Vec<(String, String)> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect()
}

fn has_volume(job: &Job, name: &str) -> bool {
    let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.volumes
        .as_ref()
        .unwrap()
        .iter()
        .any(|v| v.name == name)
}

#[test]
fn report_on_a_claim_mounts_it_in_every_worker_pod_and_passes_a_file_per_pod() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.run = 2;
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"pvc": {"claimName": "ingest-reports", "subPath": "team-a"}}
        ))
        .unwrap(),
    );
    assert_eq!(ingest_api::validate::validate_spec(&ij.spec), Ok(()));
    let mut obs = scanned(&ij, 6, totals(), false);
    for (role, st) in [
        ("copy", stage(&ij, &obs)),
        ("verify", {
            add_role_jobs(&ij, &mut obs, "copy", |_, j| {
                observed_job(j, true, false, "0", "", 0)
            });
            stage(&ij, &obs)
        }),
    ] {
        let children = desired(&ij, &st, &settings()).unwrap();
        let jobs = jobs_of(&children);
        let workers: Vec<&&Job> = jobs
            .iter()
            .filter(|j| j.labels()[labels::ROLE] == role)
            .collect();
        assert_eq!(workers.len(), 3, "{role}");
        for (s, j) in workers.iter().enumerate() {
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
            assert_eq!(
                arg_after(j, "--report").as_deref(),
                Some(format!("{REPORT_MOUNT}/team-a/media/run-2/{role}-{s}-$(JOB_COMPLETION_INDEX).jsonl.gz").as_str()),
                "{role} {s}"
            );
        }
        // The scan has no per-entry report (its unreadable entries are in the plan summary).
        let scan = jobs
            .iter()
            .find(|j| j.labels()[labels::ROLE] == "scan")
            .unwrap();
        assert!(!has_volume(scan, "report") && arg_after(scan, "--report").is_none());
    }
    let status = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(
        status.report.unwrap().location,
        "pvc ingest-reports:/team-a/media/run-2/"
    );
}

#[test]
fn report_in_the_destination_export_goes_through_each_pods_own_mount() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"destinationPath": "vfxt-ingest-reports"}
        ))
        .unwrap(),
    );
    assert_eq!(ingest_api::validate::validate_spec(&ij.spec), Ok(()));
    let obs = scanned(&ij, 8, totals(), false);
    let st = stage(&ij, &obs);
    let children = desired(&ij, &st, &settings()).unwrap();
    let copy = jobs_of(&children)
        .into_iter()
        .find(|j| j.labels()[labels::ROLE] == "copy")
        .unwrap();
    assert!(
        !has_volume(copy, "report"),
        "no extra volume: the export is mounted already"
    );
    assert_eq!(
        arg_after(copy, "--report").as_deref(),
        Some(format!("{DEST_MOUNT}/vfxt-ingest-reports/genomics/run-0/copy-0-$(JOB_COMPLETION_INDEX).jsonl.gz").as_str())
    );
    // Beside the copied tree, never in it.
    assert_eq!(
        arg_after(copy, "--dest").as_deref(),
        Some(format!("{DEST_MOUNT}/genomics/2019").as_str())
    );
    let status = compute(&ij, &obs, &st, at(10));
    assert_eq!(
        status.report.unwrap().location,
        "10.1.1.101:/nfs/vfxt-ingest-reports/genomics/run-0/"
    );

    // Without spec.report: no --report, no status.report (as before).
    ij.spec.report = None;
    let children = desired(&ij, &st, &settings()).unwrap();
    let copy = jobs_of(&children)
        .into_iter()
        .find(|j| j.labels()[labels::ROLE] == "copy")
        .unwrap();
    assert!(arg_after(copy, "--report").is_none());
    assert!(compute(&ij, &obs, &st, at(10)).report.is_none());
}

#[test]
fn a_finished_runs_record_keeps_its_report_location() {
    let (mut ij, obs) = finished_with_failures([4, 7, 0]);
    ij.spec.report = Some(
        serde_json::from_value(serde_json::json!(
            {"pvc": {"claimName": "reports"}}
        ))
        .unwrap(),
    );
    let record = compute(&ij, &obs, &stage(&ij, &obs), at(30));
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
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs), at(900)), record);
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
    let children = desired(&ij, &stage(&ij, &obs), &with_defaults).unwrap();
    let jobs = jobs_of(&children);
    assert_eq!(jobs.len(), 4, "scan + 3 copy Jobs");
    for j in jobs {
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
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
            .any(|c| matches!(c, Child::ServiceAccount(_) | Child::Role(_))),
        "{:?}",
        children.iter().map(Child::describe).collect::<Vec<_>>()
    );
    let pod = jobs_of(&children)[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("shared-ingest"));

    // Without defaults nothing changes: the operator's image only when the spec names none.
    let mut bare = fixture("one-ip.yaml");
    bare.spec.worker = Default::default();
    let children = desired(&bare, &Stage::Scan, &settings()).unwrap();
    let pod = jobs_of(&children)[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.example/vfxt-ingest:test")
    );
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
}

#[test]
fn mount_options_give_a_pre_bound_volume_and_claim_per_server() {
    let mut ij = fixture("three-ips.yaml");
    ij.spec.destination.nfs.mount_options = Some(vec!["hard".into(), "nconnect=8".into()]);
    let obs = scanned(&ij, 9, totals(), false);
    let children = desired(&ij, &stage(&ij, &obs), &settings()).unwrap();
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
    let copy0 = jobs_of(&children)
        .into_iter()
        .find(|j| j.name_any() == "media-r0-copy-0")
        .unwrap();
    let dest = volume(copy0, "dest");
    assert!(dest.nfs.is_none());
    assert_eq!(
        dest.persistent_volume_claim.as_ref().unwrap().claim_name,
        pvcs[0].name_any()
    );
}

fn result(files: u64, bytes: u64, failed: u64) -> Option<PodResult> {
    Some(PodResult {
        files,
        bytes,
        failed,
        failures: (0..failed)
            .map(|i| FileFailure {
                path: format!("d/f{i}"),
                reason: "EIO".into(),
            })
            .collect(),
        ..Default::default()
    })
}

#[test]
fn copying_status_sums_latest_pods_per_shard_and_estimates_eta() {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, false, false, "0", "", 1)
    });
    // server 0 shard 0: a failed first attempt (older) and a finished retry; only the retry counts.
    obs.pods.push(worker_pod(
        &ij,
        "copy",
        0,
        0,
        100,
        progress(50, 50_000),
        None,
    ));
    obs.pods.push(worker_pod(
        &ij,
        "copy",
        0,
        0,
        200,
        None,
        result(100, 100_000, 1),
    ));
    obs.pods.push(worker_pod(
        &ij,
        "copy",
        1,
        0,
        150,
        progress(40, 200_000),
        None,
    ));
    obs.pods.push(worker_pod(
        &ij,
        "copy",
        2,
        0,
        150,
        progress(10, 200_000),
        None,
    ));
    let mut ij = ij;
    ij.status = Some(ingest_api::IngestJobStatus {
        run: Some(0),
        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(
            1000,
        ))),
        ..Default::default()
    });
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(1100));
    assert_eq!(st.phase, Some(Phase::Copying));
    let p = st.progress.as_ref().unwrap();
    assert_eq!((p.files, p.bytes), (150, 500_000));
    assert_eq!(p.percent, 50.0);
    assert_eq!(p.percent_text, "50.0%");
    assert_eq!(p.bytes_per_second, 5000, "500 kB in 100 s");
    assert_eq!(
        p.eta.as_ref().unwrap().0,
        at(1200),
        "another 500 kB at 5 kB/s"
    );
    let servers: Vec<_> = st
        .servers
        .iter()
        .map(|s| (s.server.as_str(), s.workers, s.files, s.bytes))
        .collect();
    assert_eq!(
        servers,
        [
            ("10.1.1.101", 2, 100, 100_000),
            ("10.1.1.102", 2, 40, 200_000),
            ("10.1.1.103", 2, 10, 200_000)
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
        (6, 3, 3, 0, 0)
    );
    assert_eq!(st.failed_files, 1);
    assert_eq!(st.failures[0].path, "d/f0");
    assert!(ingest_api::conditions::is_true(
        &st.conditions,
        ct::RECONCILING
    ));
    assert!(!ingest_api::conditions::is_true(&st.conditions, ct::READY));
}

#[test]
fn progress_never_goes_backwards_after_a_restart_when_pods_are_gone() {
    let ij0 = fixture("one-ip.yaml");
    let mut obs = scanned(&ij0, 8, totals(), false);
    add_role_jobs(&ij0, &mut obs, "copy", |_, j| {
        observed_job(j, false, false, "0-3", "", 2)
    });
    obs.pods
        .push(worker_pod(&ij0, "copy", 0, 4, 10, progress(5, 5), None));
    let mut ij = ij0.clone();
    ij.status = Some(ingest_api::IngestJobStatus {
        run: Some(0),
        progress: Some(ingest_api::Progress {
            files: 400,
            bytes: 400_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(50));
    assert_eq!(st.progress.as_ref().unwrap().files, 400);
    // A new run starts from zero.
    ij.spec.run = 1;
    let st = compute(&ij, &empty(), &Stage::Scan, at(60));
    assert!(st.progress.is_none());
    assert_eq!(st.run, Some(1));
}

#[test]
fn verify_then_done_succeeds_and_keeps_transition_times() {
    let ij0 = fixture("three-ips.yaml");
    let mut obs = scanned(&ij0, 3, totals(), false);
    add_role_jobs(&ij0, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    assert!(matches!(stage(&ij0, &obs), Stage::Verify(..)));
    let mut ij = ij0.clone();
    let verifying = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(verifying.phase, Some(Phase::Verifying));
    ij.status = Some(verifying.clone());

    add_role_jobs(&ij0, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    for s in 0..3 {
        let mut r = result(0, 0, 0).unwrap();
        r.verification = Some(VerificationCounts {
            checked: 10,
            matched: 9,
            mismatched: 1,
            repaired: 1,
            ..Default::default()
        });
        obs.pods
            .push(worker_pod(&ij0, "verify", s, 0, 20, None, Some(r)));
    }
    let done = compute(&ij, &obs, &stage(&ij, &obs), at(30));
    assert_eq!(done.phase, Some(Phase::Succeeded));
    let v = done.verification.as_ref().unwrap();
    assert_eq!(
        (v.checked, v.matched, v.repaired, v.verified),
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

    // Recomputing later does not change a finished status (so it is not rewritten).
    ij.status = Some(done.clone());
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs), at(500)), done);
}

/// The copy stage of `obs`'s plan (for the Jobs as they were built).
fn stage_copy(ij: &ingest_api::IngestJob, obs: &ingest_operator::observe::Observed) -> Stage {
    match stage(ij, obs) {
        Stage::Stopped { plan, layout, .. } | Stage::Done { plan, layout, .. } => {
            Stage::Copy(plan, layout)
        }
        s => s,
    }
}

#[test]
fn fail_job_policy_stops_at_a_failed_shard() {
    let mut ij = fixture("one-ip.yaml");
    ij.spec.failure_policy.action = ingest_api::FailureAction::FailJob;
    let mut obs = scanned(&ij, 8, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, false, true, "0-6", "7", 0)
    });
    let s = stage(&ij, &obs);
    assert!(
        matches!(
            s,
            Stage::Stopped {
                failed_shards: 1,
                role: "copy",
                ..
            }
        ),
        "{s:?}"
    );
    let st = compute(&ij, &obs, &s, at(10));
    assert_eq!(st.phase, Some(Phase::Failed));
    let stalled = ingest_api::conditions::find(&st.conditions, ct::STALLED).unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", reasons::SHARD_FAILED)
    );
    assert!(
        stalled
            .message
            .contains("failure policy is FailJob; the run was stopped: no verify pass"),
        "{}",
        stalled.message
    );
    let jobs = desired(&ij, &s, &settings()).unwrap();
    assert!(
        jobs_of(&jobs)
            .iter()
            .all(|j| j.labels()[labels::ROLE] == "scan"),
        "a stopped run creates no verify Job (and no other Job but the existing scan)"
    );
    let copy = jobs_of(&desired(&ij, &stage_copy(&ij, &obs), &settings()).unwrap())
        .into_iter()
        .find(|j| j.labels()[labels::ROLE] == "copy")
        .unwrap()
        .clone();
    assert_eq!(copy.spec.unwrap().max_failed_indexes, Some(0));
}

#[test]
fn continue_policy_fails_only_above_max_failed_files() {
    let ij = fixture("three-ips.yaml"); // Continue, maxFailedFiles 10
    let mut obs = scanned(&ij, 3, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    add_role_jobs(&ij, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    obs.pods
        .push(worker_pod(&ij, "verify", 0, 0, 5, None, result(10, 10, 4)));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(st.phase, Some(Phase::Succeeded));
    assert_eq!(
        ingest_api::conditions::find(&st.conditions, ct::READY)
            .unwrap()
            .reason,
        reasons::SUCCEEDED_WITH_FAILURES
    );
    obs.pods
        .push(worker_pod(&ij, "verify", 1, 0, 5, None, result(10, 10, 7)));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Failed), 11));
}

#[test]
fn failed_scan_and_missing_plan_fail_the_run() {
    let ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 0, totals(), true);
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
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
        matches!(stage(&ij, &obs), Stage::ScanFailed(m) if m.contains("without storing a plan"))
    );
}

#[test]
fn worker_count_is_frozen_for_the_run() {
    let mut ij = fixture("one-ip.yaml");
    let obs = scanned(&ij, 8, totals(), false);
    ij.spec.workers = Some(5);
    let Stage::Copy(_, layout) = stage(&ij, &obs) else {
        panic!("copy stage")
    };
    assert_eq!(layout.slots[0].workers, 2, "the run started with 2 workers");
}

#[test]
fn a_scan_job_without_pods_points_at_its_events() {
    let ij = fixture("one-ip.yaml");
    let children = desired(&ij, &Stage::Scan, &settings()).unwrap();
    let obs = ingest_operator::observe::Observed {
        jobs: vec![observed_job(jobs_of(&children)[0], false, false, "", "", 0)],
        ..Default::default()
    };
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(5));
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
        !compute(&ij, &empty(), &Stage::Scan, at(5))
            .message
            .unwrap()
            .contains("describe"),
        "before the Job exists, nothing to point at"
    );
}

/// `three-ips.yaml` (Continue, maxFailedFiles 10) with every Job finished and verify pods reporting
/// `failed` failures each.
fn finished_with_failures(
    failed: [u64; 3],
) -> (ingest_api::IngestJob, ingest_operator::observe::Observed) {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 3, totals(), false);
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    add_role_jobs(&ij, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    for (s, n) in failed.into_iter().enumerate() {
        let mut r = result(10, 10, n).unwrap();
        r.failures = (0..n)
            .map(|i| FileFailure {
                path: format!("s{s}/f{i}"),
                reason: "EACCES".into(),
            })
            .collect();
        obs.pods
            .push(worker_pod(&ij, "verify", s, 0, 20, None, Some(r)));
    }
    (ij, obs)
}

#[test]
fn a_finished_runs_record_survives_pod_deletion_and_policy_edits() {
    let (mut ij, mut obs) = finished_with_failures([4, 7, 0]);
    let record = compute(&ij, &obs, &stage(&ij, &obs), at(30));
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

    // PodGC (or a user) deletes the finished pods: their results are gone, the record is not.
    obs.pods.clear();
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs), at(900)), record);
    // Editing the failure policy afterwards does not rewrite the verdict.
    ij.spec.failure_policy.max_failed_files = Some(1000);
    ij.metadata.generation = Some(5);
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs), at(901)), record);
    // The Jobs themselves deleted by hand: still the same record, and nothing is created again.
    obs.jobs.clear();
    assert_eq!(compute(&ij, &obs, &stage(&ij, &obs), at(902)), record);

    // A new run starts a new record.
    ij.spec.run = 1;
    let next = compute(&ij, &empty(), &stage(&ij, &empty()), at(1000));
    assert_eq!((next.run, next.phase), (Some(1), Some(Phase::Pending)));
    assert_eq!(next.failed_files, 0);
    assert!(next.completion_time.is_none() && next.failures.is_empty());
}

#[test]
fn failures_never_shrink_within_a_pass_when_pods_disappear() {
    // Verify Jobs still running (one server not finished), failures reported by finished pods.
    let (ij0, mut obs) = finished_with_failures([2, 3, 0]);
    for j in obs
        .jobs
        .iter_mut()
        .filter(|j| j.labels()[labels::ROLE] == "verify")
    {
        if j.labels()[labels::SERVER_INDEX] == "2" {
            j.status.as_mut().unwrap().conditions = Some(vec![]);
        }
    }
    let mut ij = ij0.clone();
    let first = compute(&ij, &obs, &stage(&ij, &obs), at(30));
    assert_eq!(
        (first.phase, first.failed_files),
        (Some(Phase::Verifying), 5)
    );
    ij.status = Some(first);
    obs.pods.retain(|p| p.labels()[labels::SERVER_INDEX] != "1");
    let later = compute(&ij, &obs, &stage(&ij, &obs), at(40));
    assert_eq!(
        later.failed_files, 5,
        "the pods that reported 3 of them are gone"
    );
    assert_eq!(later.failures.len(), 5);
    assert!(later.failures.iter().any(|f| f.path == "s1/f2"));
}

#[test]
fn pod_failure_policy_fails_an_index_on_exit_1_the_job_on_exit_2_and_ignores_disruptions() {
    let ij = fixture("three-ips.yaml");
    let mut obs = scanned(&ij, 6, totals(), false);
    let copy = {
        let children = desired(&ij, &stage(&ij, &obs), &settings()).unwrap();
        jobs_of(&children)
            .into_iter()
            .find(|j| j.labels()[labels::ROLE] == "copy")
            .unwrap()
            .clone()
    };
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
    assert_eq!(
        rules(&copy),
        [
            "Ignore on DisruptionTarget=True",
            "FailIndex on exit In [1]",
            "FailJob on exit In [2]"
        ]
    );
    let spec = copy.spec.as_ref().unwrap();
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
    let scan = &obs.jobs[0];
    assert_eq!(
        rules(scan),
        ["Ignore on DisruptionTarget=True", "FailJob on exit In [2]"],
        "the scan is not Indexed: no FailIndex, its exit 1 (plan not stored) is retried"
    );

    // Exit 2 in a copy pod fails that server's Job as a whole: under Continue too, the run stops.
    add_role_jobs(&ij, &mut obs, "copy", |i, j| {
        let mut j = observed_job(j, i != 1, i == 1, if i == 1 { "" } else { "0-1" }, "", 0);
        if i == 1 {
            let c = &mut j.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
            c.reason = Some("PodFailurePolicy".into());
            c.message = Some("Container copy for pod ingest/media-r0-copy-1-0-x failed with exit code 2 matching FailJob rule at index 2".into());
        }
        j
    });
    let s = stage(&ij, &obs);
    assert!(matches!(&s, Stage::Stopped { role: "copy", .. }), "{s:?}");
    let st = compute(&ij, &obs, &s, at(10));
    assert_eq!(st.phase, Some(Phase::Failed));
    let msg = st.message.unwrap();
    assert!(
        msg.contains("the copy Job media-r0-copy-1 failed (PodFailurePolicy: Container copy")
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
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
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
fn scanned_with_errors(
    ij: &ingest_api::IngestJob,
    shards: u64,
    unreadable: &[&str],
) -> ingest_operator::observe::Observed {
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
    assert!(matches!(stage(&ij, &obs), Stage::Copy(..)));
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0-1", "", 0)
    });
    add_role_jobs(&ij, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0-1", "", 0)
    });
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Succeeded), 1));
    assert_eq!(
        ingest_api::conditions::find(&st.conditions, ct::READY)
            .unwrap()
            .reason,
        reasons::SUCCEEDED_WITH_FAILURES
    );
    assert_eq!(st.failures[0].path, "locked");

    // maxFailedFiles 0: the same run is TooManyFailures.
    ij.spec.failure_policy.max_failed_files = Some(0);
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
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
    let s = stage(&ij, &obs);
    assert!(matches!(&s, Stage::Stopped { role: "scan", .. }), "{s:?}");
    assert!(
        jobs_of(&desired(&ij, &s, &settings()).unwrap())
            .iter()
            .all(|j| j.labels()[labels::ROLE] == "scan")
    );
    let st = compute(&ij, &obs, &s, at(10));
    assert_eq!((st.phase, st.failed_files), (Some(Phase::Failed), 2));
    let msg = st.message.unwrap();
    assert!(
        msg.starts_with("the scan could not read 2 entries and the failure policy is FailJob")
            && msg.contains("no copy or verify pass"),
        "{msg}"
    );
}

/// The Ready condition's reason of a status.
fn ready_reason(st: &ingest_api::IngestJobStatus) -> String {
    ingest_api::conditions::find(&st.conditions, ct::READY)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// `three-ips.yaml` (Continue, maxFailedFiles 10) with every Job finished; `verify_failed` are
/// the failed indexes of server 0's verify Job.
fn all_finished(
    ij: &ingest_api::IngestJob,
    verify_failed: &str,
) -> ingest_operator::observe::Observed {
    let mut obs = scanned(ij, 3, totals(), false);
    add_role_jobs(ij, &mut obs, "copy", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    add_role_jobs(ij, &mut obs, "verify", |i, j| {
        if i == 0 && !verify_failed.is_empty() {
            observed_job(j, false, true, "", verify_failed, 0)
        } else {
            observed_job(j, true, false, "0", "", 0)
        }
    });
    obs
}

#[test]
fn a_failed_index_with_a_result_is_counted_by_entry_and_a_crashed_one_fails_the_run() {
    let ij = fixture("three-ips.yaml");
    // Exit 1 with its result: the shard finished, two entries failed; within maxFailedFiles.
    let mut obs = all_finished(&ij, "0");
    obs.pods
        .push(worker_pod(&ij, "verify", 0, 0, 5, None, result(10, 10, 2)));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(
        (st.phase, st.failed_files),
        (Some(Phase::Succeeded), 2),
        "{st:?}"
    );
    assert_eq!(ready_reason(&st), reasons::SUCCEEDED_WITH_FAILURES);

    // Killed through its retries, no result: its entries were never accounted for.
    let mut obs = all_finished(&ij, "0");
    obs.pods.push(crashed_pod(&ij, "verify", 0, 0, 5));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(st.phase, Some(Phase::Failed), "{st:?}");
    assert_eq!(
        ingest_api::conditions::find(&st.conditions, ct::STALLED)
            .unwrap()
            .reason,
        reasons::SHARD_FAILED
    );
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
    add_role_jobs(&ij, &mut obs, "copy", |i, j| {
        if i == 1 {
            observed_job(j, false, true, "", "0", 0)
        } else {
            observed_job(j, true, false, "0", "", 0)
        }
    });
    add_role_jobs(&ij, &mut obs, "verify", |_, j| {
        observed_job(j, true, false, "0", "", 0)
    });
    obs.pods.push(crashed_pod(&ij, "copy", 1, 0, 5));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
    assert_eq!(
        st.phase,
        Some(Phase::Failed),
        "the settle pass set times; the copy never finished: {st:?}"
    );
}

#[test]
fn entries_only_in_the_destination_mean_it_is_not_identical() {
    let ij = fixture("three-ips.yaml");
    let mut obs = all_finished(&ij, "");
    let mut r = result(10, 10, 0).unwrap();
    r.verification = Some(VerificationCounts {
        checked: 12,
        matched: 10,
        extraneous: 2,
        verified: 10,
        ..Default::default()
    });
    obs.pods
        .push(worker_pod(&ij, "verify", 2, 0, 5, None, Some(r)));
    let st = compute(&ij, &obs, &stage(&ij, &obs), at(10));
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
    add_role_jobs(&ij, &mut obs, "copy", |_, j| {
        observed_job(j, false, false, "", "", 1)
    });
    // Alive pods whose counts do not move (a hard mount that stopped answering).
    obs.pods
        .push(worker_pod(&ij, "copy", 0, 0, 5, progress(40, 4_000), None));
    let stalled = |st: &ingest_api::IngestJobStatus| {
        let c = ingest_api::conditions::find(&st.conditions, ct::STALLED).unwrap();
        (c.status == "True").then(|| c.reason.clone())
    };
    let step = |ij: &mut ingest_api::IngestJob, obs: &ingest_operator::observe::Observed, t| {
        let st = compute(ij, obs, &stage(ij, obs), at(t));
        let events = ingest_operator::reconcile::events_for(ij.status.as_ref(), &st);
        ij.status = Some(st.clone());
        (st, events.into_iter().map(|e| e.reason).collect::<Vec<_>>())
    };
    let (st, _) = step(&mut ij, &obs, 10);
    assert_eq!((st.phase, stalled(&st)), (Some(Phase::Copying), None));
    let since = st.progress.as_ref().unwrap().last_progress_time.clone();
    assert_eq!(since.as_ref().map(|t| t.0), Some(at(10)));
    // Within the default 60 s: nothing to say.
    let (st, ev) = step(&mut ij, &obs, 69);
    assert_eq!((stalled(&st), ev.len()), (None, 0), "{st:?}");
    // At 60 s without a file: Stalled, one Warning, the phase unchanged; said once.
    let (st, ev) = step(&mut ij, &obs, 70);
    assert_eq!(
        stalled(&st).as_deref(),
        Some(reasons::NO_PROGRESS),
        "{st:?}"
    );
    assert_eq!(
        (st.phase, ev),
        (Some(Phase::Copying), vec![reasons::NO_PROGRESS.to_string()])
    );
    let (_, ev) = step(&mut ij, &obs, 200);
    assert!(ev.is_empty());
    // Files move again: no longer stalled, measured from now.
    obs.pods[0] = worker_pod(&ij, "copy", 0, 0, 5, progress(41, 4_100), None);
    let (st, ev) = step(&mut ij, &obs, 205);
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
    let (st, _) = step(&mut ij, &obs, 216);
    assert_eq!(stalled(&st).as_deref(), Some(reasons::NO_PROGRESS));
}
