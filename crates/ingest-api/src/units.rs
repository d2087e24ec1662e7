//! How sizes are shown to people, the same in status messages, printer columns and the CLI (one
//! implementation, in the kube-free job core).

pub use ingest_job::units::human_bytes;
