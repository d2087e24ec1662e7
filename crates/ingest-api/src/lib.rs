//! The `IngestJob` API: the custom resource's spec and status, the CRD generated from them, the conditions
//! helpers, the contract between pods and operator, and shared names. No client and no async runtime, so the
//! local `run` mode and the planner can depend on it cheaply.

pub mod claims;
pub mod conditions;
pub mod constants;
pub mod estimate;
pub mod job;
pub mod policy;
pub mod report;
pub mod strict;
pub mod units;
pub mod validate;

pub use job::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRD of `IngestJob`, generated from the Rust types.
pub fn crd() -> CustomResourceDefinition {
    let mut value = serde_json::to_value(IngestJob::crd()).expect("a CRD serializes");
    drop_unsigned_formats(&mut value);
    not_nullable_with_default(&mut value);
    serde_json::from_value(value).expect("removing formats keeps a valid CRD")
}

/// schemars marks unsigned integers with formats (`uint32`, `uint64`) that Kubernetes does not know and warns
/// about on every apply; the `minimum: 0` schemars also emits already says what they mean.
fn drop_unsigned_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            map.values_mut().for_each(drop_unsigned_formats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unsigned_formats),
        _ => {}
    }
}

/// kube marks every int-or-string property that is not `required` `nullable` (meant for `Option<IntOrString>`).
/// A property with a default is never absent, and an explicit `null` would stay null instead of being pruned and
/// defaulted, so those (`threadsPerWorker`) lose the mark.
fn not_nullable_with_default(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true))
                && map.contains_key("default")
            {
                map.remove("nullable");
            }
            map.values_mut().for_each(not_nullable_with_default);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(not_nullable_with_default),
        _ => {}
    }
}

/// The CRD as YAML, exactly what `vfxt-ingest crd` prints and `crds/ingest.vfxt.dev_ingestjobs.yaml` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("a CRD always serializes to YAML")
}
