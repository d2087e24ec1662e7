//! Prometheus metrics in the text exposition format, kept in atomics and small maps (a handful of series per
//! IngestJob), rendered on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ingest_api::{Phase, ServerState, ServerStatus};

use crate::error::Category;

/// Upper bounds (seconds) of the reconcile duration histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// What the operator reports about one IngestJob.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobSample {
    /// Current phase.
    pub phase: Option<Phase>,
    /// Files done in the current run.
    pub files: u64,
    /// Bytes done in the current run.
    pub bytes: u64,
    /// Per destination server, from the status (`status.servers`).
    pub servers: Vec<ServerStatus>,
}

/// All operator metrics.
#[derive(Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    status_writes: AtomicU64,
    errors: Mutex<BTreeMap<Category, u64>>,
    histogram: Mutex<([u64; BUCKETS.len()], u64, f64)>,
    jobs: Mutex<BTreeMap<(String, String), JobSample>>,
    /// The client's requests to the API server (when the client counts them).
    api: Option<std::sync::Arc<crate::api_count::ApiCounts>>,
}

impl Metrics {
    /// Metrics that also render the client's API requests.
    pub fn with_api_counts(api: std::sync::Arc<crate::api_count::ApiCounts>) -> Metrics {
        Metrics {
            api: Some(api),
            ..Metrics::default()
        }
    }

    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let mut h = self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.0[i] += 1;
            }
        }
        h.1 += 1;
        h.2 += secs;
    }

    /// Counts one failed reconcile.
    pub fn error(&self, c: Category) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(c)
            .or_default() += 1;
    }

    /// Counts one `/status` write.
    pub fn status_written(&self) {
        self.status_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the state of one IngestJob.
    pub fn job(&self, namespace: &str, name: &str, sample: JobSample) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.into(), name.into()), sample);
    }

    /// Forgets a deleted IngestJob.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP vfxt_ingest_reconciles_total Reconciles run.\n# TYPE vfxt_ingest_reconciles_total counter"
        );
        let _ = writeln!(
            o,
            "vfxt_ingest_reconciles_total {}",
            self.reconciles.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP vfxt_ingest_status_writes_total IngestJob status writes.\n# TYPE vfxt_ingest_status_writes_total counter"
        );
        let _ = writeln!(
            o,
            "vfxt_ingest_status_writes_total {}",
            self.status_writes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP vfxt_ingest_reconcile_errors_total Failed reconciles by error category.\n# TYPE vfxt_ingest_reconcile_errors_total counter"
        );
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for c in Category::ALL {
            let _ = writeln!(
                o,
                "vfxt_ingest_reconcile_errors_total{{category=\"{}\"}} {}",
                c.as_str(),
                errors.get(&c).copied().unwrap_or(0)
            );
        }
        let h = *self.histogram.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(
            o,
            "# HELP vfxt_ingest_reconcile_duration_seconds Reconcile duration.\n# TYPE vfxt_ingest_reconcile_duration_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "vfxt_ingest_reconcile_duration_seconds_bucket{{le=\"{b}\"}} {}",
                h.0[i]
            );
        }
        let _ = writeln!(
            o,
            "vfxt_ingest_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.1
        );
        let _ = writeln!(
            o,
            "vfxt_ingest_reconcile_duration_seconds_sum {}\nvfxt_ingest_reconcile_duration_seconds_count {}",
            h.2, h.1
        );

        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut by_phase: BTreeMap<&str, u64> = [
            "Pending",
            "Scanning",
            "Copying",
            "Verifying",
            "Succeeded",
            "Failed",
        ]
        .into_iter()
        .map(|p| (p, 0))
        .collect();
        for s in jobs.values() {
            if let Some(p) = s.phase {
                *by_phase.entry(p.as_str()).or_default() += 1;
            }
        }
        let _ = writeln!(
            o,
            "# HELP vfxt_ingest_jobs IngestJobs by phase.\n# TYPE vfxt_ingest_jobs gauge"
        );
        for (p, n) in by_phase {
            let _ = writeln!(o, "vfxt_ingest_jobs{{phase=\"{p}\"}} {n}");
        }
        for (metric, help, pick) in [
            (
                "vfxt_ingest_copied_files",
                "Files done in the current run.",
                (|s: &JobSample| s.files) as fn(&JobSample) -> u64,
            ),
            (
                "vfxt_ingest_copied_bytes",
                "Bytes done in the current run.",
                |s: &JobSample| s.bytes,
            ),
        ] {
            let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for ((ns, name), s) in &jobs {
                let _ = writeln!(
                    o,
                    "{metric}{{namespace=\"{ns}\",ingestjob=\"{name}\"}} {}",
                    pick(s)
                );
            }
        }
        render_servers(&mut o, &jobs);
        if let Some(api) = &self.api {
            let _ = writeln!(
                o,
                "# HELP vfxt_ingest_api_requests_total Requests to the Kubernetes API server, by verb and resource (a watch counts when it starts).\n# TYPE vfxt_ingest_api_requests_total counter"
            );
            for ((verb, resource), n) in api.snapshot() {
                let _ = writeln!(
                    o,
                    "vfxt_ingest_api_requests_total{{verb=\"{verb}\",resource=\"{resource}\"}} {n}"
                );
            }
        }
        o
    }
}

/// Per destination server of each IngestJob (the Grafana dashboard's per-IP panels): counters
/// of the current run, the task-time percentiles, and the state as a 0/1 series per state.
fn render_servers(o: &mut String, jobs: &BTreeMap<(String, String), JobSample>) {
    type Pick = fn(&ServerStatus) -> Option<f64>;
    let series: [(&str, &str, &str, Pick); 4] = [
        (
            "vfxt_ingest_server_files_total",
            "Entries handled through the destination server in the current run (resets with a new run).",
            "counter",
            |s| Some(s.files as f64),
        ),
        (
            "vfxt_ingest_server_bytes_total",
            "Bytes written through the destination server in the current run (resets with a new run).",
            "counter",
            |s| Some(s.bytes as f64),
        ),
        (
            "vfxt_ingest_server_task_p50_seconds",
            "Median engine task time through the server (upper bound of its bucket).",
            "gauge",
            |s| s.task_p50_micros.map(|u| u as f64 / 1e6),
        ),
        (
            "vfxt_ingest_server_task_p99_seconds",
            "99th percentile engine task time through the server (upper bound of its bucket).",
            "gauge",
            |s| s.task_p99_micros.map(|u| u as f64 / 1e6),
        ),
    ];
    for (metric, help, kind, pick) in series {
        let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for ((ns, name), j) in jobs {
            for s in &j.servers {
                if let Some(v) = pick(s) {
                    let _ = writeln!(
                        o,
                        "{metric}{{namespace=\"{ns}\",ingestjob=\"{name}\",server=\"{}\"}} {v}",
                        s.server
                    );
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP vfxt_ingest_server_state 1 for the destination server's state (Healthy, Slow, Unresponsive).\n# TYPE vfxt_ingest_server_state gauge"
    );
    for ((ns, name), j) in jobs {
        for s in &j.servers {
            for state in [
                ServerState::Healthy,
                ServerState::Slow,
                ServerState::Unresponsive,
            ] {
                let _ = writeln!(
                    o,
                    "vfxt_ingest_server_state{{namespace=\"{ns}\",ingestjob=\"{name}\",server=\"{}\",state=\"{state:?}\"}} {}",
                    s.server,
                    u8::from(s.state == Some(state))
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_errors_phases_and_durations() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(30));
        m.error(Category::Conflict);
        m.job(
            "ns",
            "a",
            JobSample {
                phase: Some(Phase::Copying),
                files: 7,
                bytes: 9,
                servers: vec![ServerStatus {
                    server: "10.0.0.3".into(),
                    files: 4,
                    bytes: 40,
                    task_p50_micros: Some(2048),
                    state: Some(ServerState::Unresponsive),
                    ..Default::default()
                }],
            },
        );
        let t = m.render();
        assert!(t.contains("vfxt_ingest_reconciles_total 1"));
        assert!(t.contains("vfxt_ingest_reconcile_errors_total{category=\"conflict\"} 1"));
        assert!(t.contains("vfxt_ingest_reconcile_errors_total{category=\"invalid\"} 0"));
        assert!(t.contains("vfxt_ingest_reconcile_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(t.contains("vfxt_ingest_reconcile_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(t.contains("vfxt_ingest_jobs{phase=\"Copying\"} 1"));
        assert!(t.contains("vfxt_ingest_copied_bytes{namespace=\"ns\",ingestjob=\"a\"} 9"));
        let server = "namespace=\"ns\",ingestjob=\"a\",server=\"10.0.0.3\"";
        assert!(
            t.contains(&format!("vfxt_ingest_server_bytes_total{{{server}}} 40")),
            "{t}"
        );
        assert!(t.contains(&format!(
            "vfxt_ingest_server_task_p50_seconds{{{server}}} 0.002048"
        )));
        assert!(
            !t.contains("vfxt_ingest_server_task_p99_seconds{"),
            "none measured"
        );
        assert!(t.contains(&format!(
            "vfxt_ingest_server_state{{{server},state=\"Unresponsive\"}} 1"
        )));
        assert!(t.contains(&format!(
            "vfxt_ingest_server_state{{{server},state=\"Healthy\"}} 0"
        )));
        assert!(
            !t.contains("vfxt_ingest_api_requests_total"),
            "no client counts here"
        );
        let api = std::sync::Arc::new(crate::api_count::ApiCounts::default());
        let with_api = Metrics::with_api_counts(api.clone());
        api.count(
            &http::Method::PATCH,
            &"/apis/ingest.vfxt.dev/v1alpha1/namespaces/n/ingestjobs/a/status"
                .parse()
                .unwrap(),
        );
        assert!(with_api.render().contains(
            "vfxt_ingest_api_requests_total{verb=\"patch\",resource=\"ingestjobs/status\"} 1"
        ));
        m.forget("ns", "a");
        assert!(m.render().contains("vfxt_ingest_jobs{phase=\"Copying\"} 0"));
    }
}
