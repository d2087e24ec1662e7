//! Every shipped example is a valid IngestJob: it parses with the Rust types, passes the same validation the
//! CRD's CEL rules do, and has no field the types do not know (a typo would otherwise be silently dropped by
//! the API server's pruning). `tests/packaging/check.sh` also sends them to a real API server (dry run) and runs
//! the local one with `vfxt-ingest run`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ingest_api::IngestJob;
use ingest_api::validate::validate_spec;
use packaging_tests::repo_root;
use serde_yaml::Value;

/// Examples for `vfxt-ingest run` (local paths instead of NFS) and plain Kubernetes objects are not cluster
/// IngestJobs.
const NOT_CLUSTER_JOBS: &[&str] = &["local-run.yaml", "namespace.yaml"];

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Dotted paths of every mapping key in `v` (sequence items share their parent's path).
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let p = format!("{prefix}.{}", k.as_str().unwrap_or("?"));
                out.insert(p.clone());
                key_paths(v, &p, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| key_paths(v, prefix, out)),
        _ => {}
    }
}

fn cluster_jobs() -> Vec<(PathBuf, Value, IngestJob)> {
    examples()
        .into_iter()
        .filter(|p| !NOT_CLUSTER_JOBS.contains(&p.file_name().unwrap().to_str().unwrap()))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let raw: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", p.display()));
            let ij: IngestJob = serde_yaml::from_value(raw.clone())
                .unwrap_or_else(|e| panic!("{}: not an IngestJob: {e}", p.display()));
            (p, raw, ij)
        })
        .collect()
}

#[test]
fn every_example_parses_validates_and_has_only_known_fields() {
    let jobs = cluster_jobs();
    assert!(
        jobs.len() >= 4,
        "expected the 3-node vFXT, HPC Cache, PVC and audit examples, found {}",
        jobs.len()
    );
    for (path, raw, ij) in &jobs {
        if let Err(e) = validate_spec(&ij.spec) {
            panic!("{}: invalid spec: {e}", path.display());
        }
        assert_eq!(
            ij.metadata.namespace.as_deref(),
            Some("ingest"),
            "{}: examples live in namespace ingest (examples/namespace.yaml)",
            path.display()
        );
        let mut written = BTreeSet::new();
        key_paths(raw, "", &mut written);
        let mut understood = BTreeSet::new();
        key_paths(&serde_yaml::to_value(ij).unwrap(), "", &mut understood);
        let unknown: Vec<_> = written.difference(&understood).collect();
        assert!(
            unknown.is_empty(),
            "{}: fields the IngestJob type does not have: {unknown:?}",
            path.display()
        );
    }
}

#[test]
fn the_examples_cover_the_documented_setups() {
    let jobs = cluster_jobs();
    let any = |f: &dyn Fn(&IngestJob) -> bool| jobs.iter().any(|(_, _, ij)| f(ij));
    assert!(
        any(&|ij| ij.spec.destination.nfs.servers.len() == 3 && ij.spec.source.nfs.is_some()),
        "a 3-IP vFXT example"
    );
    assert!(
        any(&|ij| ij.spec.destination.nfs.servers.len() >= 6),
        "an HPC Cache example with its mount addresses"
    );
    assert!(
        any(&|ij| ij.spec.source.pvc.is_some()),
        "a PVC source example"
    );
    assert!(
        any(&|ij| ij.spec.verify.mode == ingest_api::VerifyMode::Checksum && ij.spec.run > 0),
        "a checksum audit re-run"
    );
}

#[test]
fn the_local_example_is_an_ingestjob_with_local_paths() {
    let text = std::fs::read_to_string(repo_root().join("examples/local-run.yaml")).unwrap();
    let raw: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(raw["apiVersion"].as_str(), Some("ingest.vfxt.dev/v1alpha1"));
    assert_eq!(raw["kind"].as_str(), Some("IngestJob"));
    assert!(
        raw["spec"]["source"]["local"].is_string(),
        "local source path"
    );
    assert_eq!(
        raw["spec"]["destination"]["local"]
            .as_sequence()
            .map(|s| s.len()),
        Some(3),
        "three local destination mounts"
    );
}
