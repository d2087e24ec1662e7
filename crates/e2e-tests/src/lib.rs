//! Test support for the operator e2e tests in `tests/e2e/operator/`: the `e2e-slow-nodes` binary mounts
//! emulated cluster nodes (see `ingest-latencyfs`) whose per-operation latency keeps an IngestJob copying
//! long enough for a test to kill a worker or the operator mid-copy, deterministically.
