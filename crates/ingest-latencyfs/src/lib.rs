//! Emulated cluster nodes for benchmarks (never shipped in the operator image).
//!
//! The product is for NFS cache clusters, where every metadata operation is a network round
//! trip and throughput comes from many operations in flight over several node IPs. This machine
//! has no NFS client and no `tc netem`, so a [`Node`] stands in for one node IP: a FUSE
//! passthrough over a shared backing directory that adds a configured latency to each operation
//! and serves only `capacity` operations at once. Several nodes over one backing directory are
//! one export reached through several IPs, possibly with uneven nodes.

pub mod fs;
pub mod mount;

pub use fs::{LatencyFs, NodeConfig, Stats, StatsSnapshot};
pub use mount::{MountError, Node, Tmpfs, set_running_group, unmount_all_on_signal};
