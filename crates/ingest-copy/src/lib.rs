//! The copy and verify engine.
//!
//! One source tree, one destination export reached through one or more mounts (one per cluster
//! node IP). Worker threads are bound to mounts round robin; each file is written through exactly
//! one of them. Files are written in place (final name, no temp file + rename) and get their
//! mtime only once their data is complete, so a half-written file never looks finished and a
//! re-run skips exactly the files that are done.
//!
//! Entry point: [`run`]. Inputs: [`CopyJob`] and [`Options`]. Outputs: a [`Summary`], live
//! [`Progress`] counters, and per-path [`ReportEntry`]s sent to a [`ReportSink`].

pub mod job;
pub mod progress;
pub mod report;

pub use job::{CopyJob, MultiLinked, Options, Passes, Preserve, Scope, VerifyMode};
pub use progress::{Progress, Snapshot};
pub use ingest_path::{RelPath, escape};
pub use report::{CopyCounts, Mismatch, Outcome, ReportEntry, ReportSink, Summary, VerifyCounts};
