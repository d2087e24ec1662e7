//! The `IngestJob` API: the custom resource's spec and status, the CRD generated from them, the conditions
//! helpers, the contract between pods and operator, and shared names. No client and no async runtime, so the
//! local `run` mode and the planner can depend on it cheaply.

pub mod conditions;
pub mod constants;
pub mod job;
pub mod report;
pub mod validate;

pub use job::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRD of `IngestJob`, generated from the Rust types.
pub fn crd() -> CustomResourceDefinition {
    IngestJob::crd()
}

/// The CRD as YAML, exactly what `vfxt-ingest crd` prints and `crds/ingest.vfxt.dev_ingestjobs.yaml` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&crd()).expect("a CRD always serializes to YAML")
}
