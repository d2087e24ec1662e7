//! Scanner and shard planner.
//!
//! [`scan::scan`] walks a source tree in parallel and keeps per-directory aggregates;
//! [`planner::plan`] turns them into a [`format::Plan`]: about K shards of similar predicted cost,
//! each a few scopes (never a file list), dealt to workers and destination servers;
//! [`scopes::engine_scopes`] maps a shard onto the copy engine's scopes for a phase.
//! Plain synchronous code: no async runtime, no Kubernetes.

pub mod format;
pub mod planner;
pub mod scan;
pub mod scopes;
pub mod summary;

pub use format::{CostModel, Plan, Shard, ShardScope};
pub use planner::{PlanError, PlanOptions, plan};
pub use scan::{Scan, ScanError, ScanOptions, scan};
pub use scopes::{Phase, engine_options, engine_scopes, linked_elsewhere, settled_dirs};
