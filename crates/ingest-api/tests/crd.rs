//! The generated CRD: checked-in copy is fresh, validation rules are present and do what they say (evaluated
//! client-side with kube's CEL validator), example objects deserialize.

use std::path::PathBuf;

use ingest_api::validate::validate_spec;
use ingest_api::{IngestJob, IngestJobSpec, ThreadsPerWorker, VerifyMode, crd_yaml};

const REGENERATE: &str = "cargo run -p vfxt-ingest -- crd > crds/ingest.vfxt.dev_ingestjobs.yaml";

fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds/ingest.vfxt.dev_ingestjobs.yaml")
}

#[test]
fn checked_in_crd_is_fresh() {
    let path = crd_path();
    let generated = crd_yaml();
    // Lets the CRD be written before the `vfxt-ingest` binary exists (and by CI tooling without it).
    if std::env::var_os("VFXT_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is stale or missing; regenerate it with `{REGENERATE}` (or VFXT_UPDATE_CRDS=1 cargo test -p ingest-api --test crd)",
        path.display()
    );
}

/// Keywords a structural schema may not hold: the API server refuses the whole CRD for one of them
/// (schemars writes a map with integer keys as `patternProperties`).
#[test]
fn the_schema_holds_only_what_the_api_server_accepts() {
    let yaml = crd_yaml();
    for keyword in ["patternProperties", "$ref", "definitions"] {
        assert!(
            !yaml.contains(keyword),
            "the CRD holds {keyword}, which a CustomResourceDefinition's schema may not"
        );
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn full_example_deserializes_with_every_field() {
    let ij: IngestJob = serde_yaml::from_str(&fixture("full.yaml")).unwrap();
    let s = &ij.spec;
    assert_eq!(s.source.nfs.as_ref().unwrap().server, "10.0.0.5");
    assert_eq!(s.source.sub_path.as_deref(), Some("2019"));
    assert_eq!(
        s.destination.nfs.servers,
        ["10.1.1.101", "10.1.1.102", "10.1.1.103"]
    );
    assert_eq!(
        s.destination.nfs.mount_options.as_ref().unwrap(),
        &["hard", "nconnect=8", "vers=3"]
    );
    assert_eq!(
        (s.workers, s.threads_per_worker, s.shards.target),
        (Some(6), ThreadsPerWorker::Fixed(16), Some(256))
    );
    assert_eq!(s.verify.mode, VerifyMode::Checksum);
    assert!(!s.verify.repair);
    assert!(s.preserve.xattrs && !s.preserve.owner);
    assert_eq!(s.failure_policy.max_failed_files, Some(100));
    assert_eq!(s.run, 2);
    assert_eq!(
        s.worker.image.as_deref(),
        Some("registry.example/vfxt-ingest:0.1.0")
    );
    assert!(s.worker.tolerations.as_ref().is_some_and(|t| t.len() == 1));
    assert_eq!(
        s.report.as_ref().unwrap().destination_path.as_deref(),
        Some("genomics-reports")
    );
    assert!(validate_spec(s).is_ok(), "{:?}", validate_spec(s));
}

#[test]
fn minimal_example_gets_defaults() {
    let ij: IngestJob = serde_yaml::from_str(&fixture("minimal.yaml")).unwrap();
    let s: &IngestJobSpec = &ij.spec;
    assert_eq!(s.source.pvc.as_ref().unwrap().claim_name, "old-filer");
    assert_eq!(s.workers, None);
    assert_eq!(s.threads_per_worker, ThreadsPerWorker::Fixed(16));
    assert_eq!(s.verify.mode, VerifyMode::Metadata);
    assert!(
        s.verify.repair,
        "the verify pass repairs unless told not to"
    );
    assert!(s.preserve.owner && s.preserve.hardlinks && !s.preserve.xattrs);
    assert_eq!(s.failure_policy.retries_per_shard, 3);
    assert!(validate_spec(s).is_ok());
}

#[test]
fn schema_carries_the_validation_rules() {
    let yaml = crd_yaml();
    for needle in [
        "x-kubernetes-list-type: set",
        "self == oldSelf",
        "spec.source is immutable",
        "spec.destination is immutable",
        "has(self.nfs) != has(self.pvc)",
        "spec.destination.nfs.servers: every entry must be an IP address",
        "spec.destination.nfs.path must be an absolute path",
        "spec.source.subPath must be a relative path",
        "shortNames:\n    - ij",
        "subresources:\n      status: {}",
        "jsonPath: .status.progress.percentText",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle:?}");
    }
    assert!(
        !yaml.contains("format: uint"),
        "Kubernetes warns about unsigned formats"
    );
    let crd = ingest_api::crd();
    let schema = serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap()).unwrap();
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["workers"]["minimum"].as_f64(), Some(1.0));
    // Structural int-or-string (`16` or `auto`): no type, no format, the range in a CEL rule; default 16.
    let threads = spec["threadsPerWorker"].as_object().unwrap();
    assert_eq!(threads["x-kubernetes-int-or-string"], true);
    assert_eq!(threads["default"], 16);
    for absent in [
        "type", "format", "minimum", "maximum", "anyOf", "oneOf", "nullable",
    ] {
        assert!(
            !threads.contains_key(absent),
            "threadsPerWorker has {absent}"
        );
    }
    assert_eq!(
        threads["x-kubernetes-validations"][0]["message"],
        "spec.threadsPerWorker must be an integer 1..1024 or \"auto\""
    );
    assert_eq!(
        spec["destination"]["properties"]["nfs"]["properties"]["servers"]["minItems"].as_u64(),
        Some(1)
    );
}

/// (what to change in the full example, field the error must name)
fn bad_cases() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    use serde_json::json;
    vec![
        (
            "no servers",
            json!({"destination": {"nfs": {"servers": [], "path": "/nfs"}}}),
            "spec.destination.nfs.servers",
        ),
        (
            "bad server",
            json!({"destination": {"nfs": {"servers": ["10.0.0.300"], "path": "/nfs"}}}),
            "spec.destination.nfs.servers",
        ),
        (
            "uppercase host",
            json!({"destination": {"nfs": {"servers": ["Node1"], "path": "/nfs"}}}),
            "spec.destination.nfs.servers",
        ),
        (
            "relative dst path",
            json!({"destination": {"nfs": {"servers": ["a"], "path": "nfs"}}}),
            "spec.destination.nfs.path",
        ),
        (
            "dotdot dst path",
            json!({"destination": {"nfs": {"servers": ["a"], "path": "/nfs/../etc"}}}),
            "spec.destination.nfs.path",
        ),
        (
            "absolute subPath",
            json!({"destination": {"nfs": {"servers": ["a"], "path": "/nfs"}, "subPath": "/x"}}),
            "spec.destination.subPath",
        ),
        (
            "dotdot src subPath",
            json!({"source": {"nfs": {"server": "nas", "path": "/e"}, "subPath": "a/../.."}}),
            "spec.source.subPath",
        ),
        (
            "two sources",
            json!({"source": {"nfs": {"server": "nas", "path": "/e"}, "pvc": {"claimName": "x"}}}),
            "spec.source",
        ),
        ("no source", json!({"source": {}}), "spec.source"),
        (
            "bad src server",
            json!({"source": {"nfs": {"server": "bad_host", "path": "/e"}}}),
            "spec.source.nfs.server",
        ),
        ("zero workers", json!({"workers": 0}), "spec.workers"),
        (
            "too many threads",
            json!({"threadsPerWorker": 1025}),
            "spec.threadsPerWorker",
        ),
        (
            "zero threads",
            json!({"threadsPerWorker": 0}),
            "spec.threadsPerWorker",
        ),
        (
            "threads 2000",
            json!({"threadsPerWorker": 2000}),
            "spec.threadsPerWorker",
        ),
        (
            "threads fast",
            json!({"threadsPerWorker": "fast"}),
            "spec.threadsPerWorker",
        ),
        (
            "threads as a quoted number",
            json!({"threadsPerWorker": "16"}),
            "spec.threadsPerWorker",
        ),
        (
            "report inside the copied tree",
            json!({"report": {"destinationPath": "genomics/2019/reports"}}),
            "spec.report.destinationPath",
        ),
        (
            "report containing the copied tree",
            json!({"report": {"destinationPath": "genomics"}}),
            "spec.report.destinationPath",
        ),
        (
            "report in the export without a destination subPath",
            json!({"destination": {"nfs": {"servers": ["a"], "path": "/nfs"}, "subPath": ""}}),
            "spec.report.destinationPath",
        ),
        (
            "absolute report path",
            json!({"report": {"destinationPath": "/reports"}}),
            "spec.report.destinationPath",
        ),
        (
            "dotdot report path",
            json!({"report": {"destinationPath": "x/../genomics"}}),
            "spec.report.destinationPath",
        ),
        (
            "two report targets",
            json!({"report": {"pvc": {"claimName": "reports"}}}),
            "spec.report",
        ),
    ]
}

fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_object()
                    && b.get(k).is_some_and(|x| x.is_object())
                    && !v.as_object().unwrap().is_empty()
                {
                    merge(b.get_mut(k).unwrap(), v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn full_json() -> serde_json::Value {
    let ij: IngestJob = serde_yaml::from_str(&fixture("full.yaml")).unwrap();
    serde_json::to_value(&ij).unwrap()
}

#[test]
fn cel_and_rust_validation_reject_the_same_specs_naming_the_field() {
    use kube::core::cel::Validator;
    let crd = ingest_api::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();

    let good = full_json();
    assert!(
        Validator::new().validate(&schema, &good, None).is_ok(),
        "the full example must pass the CRD rules: {:?}",
        Validator::new().validate(&schema, &good, None)
    );
    for threads in [
        serde_json::json!("auto"),
        serde_json::json!(1),
        serde_json::json!(1024),
    ] {
        let mut obj = good.clone();
        obj["spec"]["threadsPerWorker"] = threads.clone();
        let cel = Validator::new().validate(&schema, &obj, None);
        assert!(cel.is_ok(), "threadsPerWorker: {threads} rejected: {cel:?}");
        let ij: IngestJob = serde_json::from_value(obj).unwrap();
        assert!(
            validate_spec(&ij.spec).is_ok(),
            "threadsPerWorker: {threads}"
        );
    }

    for (what, patch, field) in bad_cases() {
        let mut obj = good.clone();
        merge(&mut obj["spec"], &patch);
        // Rust: always names the field, from validate_spec, or already when reading the object (a value the
        // type cannot hold, such as `threadsPerWorker: fast`; serde_yaml errors carry the field's path).
        match serde_yaml::from_str::<IngestJob>(&serde_yaml::to_string(&obj).unwrap()) {
            Ok(ij) => {
                let rust = validate_spec(&ij.spec).expect_err(what);
                assert!(
                    rust.0.iter().any(|e| e.field == field),
                    "{what}: Rust named {rust}, want {field}"
                );
            }
            Err(e) => assert!(
                e.to_string().contains(field),
                "{what}: reading it failed without naming {field}: {e}"
            ),
        }
        // Schema validation: CEL rules or OpenAPI bounds (minItems/minimum/maximum) must reject it.
        let cel = Validator::new().validate(&schema, &obj, None);
        let bounds = openapi_bounds_reject(&schema, &obj);
        assert!(cel.is_err() || bounds, "{what}: the CRD schema accepts it");
        if let Err(e) = cel {
            let text = format!("{e:?}");
            assert!(
                text.contains(field),
                "{what}: CEL message {text} does not name {field}"
            );
        }
    }
}

/// The OpenAPI bounds the API server checks before CEL (kube's client-side validator only runs CEL).
fn openapi_bounds_reject(schema: &serde_json::Value, obj: &serde_json::Value) -> bool {
    let spec_schema = &schema["properties"]["spec"]["properties"];
    let spec = &obj["spec"];
    let n = |v: &serde_json::Value| v.as_f64();
    let out_of = |value: Option<f64>, s: &serde_json::Value| {
        value.is_some_and(|v| {
            s["minimum"].as_f64().is_some_and(|m| v < m)
                || s["maximum"].as_f64().is_some_and(|m| v > m)
        })
    };
    out_of(n(&spec["workers"]), &spec_schema["workers"])
        || spec["destination"]["nfs"]["servers"]
            .as_array()
            .is_some_and(|a| a.is_empty())
}

#[test]
fn source_and_destination_are_immutable() {
    use kube::core::cel::Validator;
    let crd = ingest_api::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let old = full_json();

    let mut changed_workers = old.clone();
    changed_workers["spec"]["workers"] = 12.into();
    changed_workers["spec"]["run"] = 3.into();
    assert!(
        Validator::new()
            .validate(&schema, &changed_workers, Some(&old))
            .is_ok(),
        "workers and run may change"
    );

    for (field, ptr) in [
        ("spec.source", "/spec/source/nfs/path"),
        ("spec.destination", "/spec/destination/nfs/path"),
    ] {
        let mut new = old.clone();
        *new.pointer_mut(ptr).unwrap() = "/elsewhere".into();
        let err = Validator::new()
            .validate(&schema, &new, Some(&old))
            .expect_err(field);
        assert!(
            format!("{err:?}").contains(&format!("{field} is immutable")),
            "{err:?}"
        );
    }
}

#[test]
fn report_location_changes_only_with_a_new_run() {
    use kube::core::cel::Validator;
    let crd = ingest_api::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let old = full_json();
    let moved = |new: &mut serde_json::Value| {
        new["spec"]["report"] = serde_json::json!({"pvc": {"claimName": "reports"}});
    };
    let dropped = |new: &mut serde_json::Value| {
        new["spec"].as_object_mut().unwrap().remove("report");
    };
    for change in [&moved as &dyn Fn(&mut serde_json::Value), &dropped] {
        let mut new = old.clone();
        change(&mut new);
        let err = Validator::new()
            .validate(&schema, &new, Some(&old))
            .expect_err("report changed within a run");
        assert!(
            format!("{err:?}").contains("spec.report can change only together with spec.run"),
            "{err:?}"
        );
        // The other way round (added to a job that had none, or replaced): the same rule.
        assert!(
            Validator::new()
                .validate(&schema, &old, Some(&new))
                .is_err(),
            "changed back within a run"
        );
        new["spec"]["run"] = 3.into();
        assert!(
            Validator::new().validate(&schema, &new, Some(&old)).is_ok(),
            "with a new run it may change"
        );
    }
    // An update that leaves it alone is fine.
    let mut same = old.clone();
    same["spec"]["workers"] = 12.into();
    assert!(
        Validator::new()
            .validate(&schema, &same, Some(&old))
            .is_ok()
    );
}
