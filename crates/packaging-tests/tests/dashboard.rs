//! The chart's Grafana dashboard (`charts/vfxt-ingest/dashboards/vfxt-ingest.json`) asks only for
//! series the operator exports: every `vfxt_ingest_*` name in a panel's query is rendered by the
//! operator's own `/metrics` code for an IngestJob with per-server figures, and every per-IP
//! series the operator exports has a panel.

use std::collections::BTreeSet;

use ingest_api::{Phase, ServerState, ServerStatus};
use ingest_operator::metrics::{JobSample, Metrics};
use packaging_tests::repo_root;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("vfxt_ingest_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_dashboard_queries_only_series_the_operator_exports() {
    let path = repo_root().join("charts/vfxt-ingest/dashboards/vfxt-ingest.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queried = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5, "{} panels", panels.len());
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            queried.extend(metric_names(q));
        }
    }

    let m = Metrics::default();
    m.job(
        "ns",
        "a",
        JobSample {
            phase: Some(Phase::Copying),
            files: 1,
            bytes: 1,
            servers: vec![ServerStatus {
                server: "10.0.0.1".into(),
                files: 1,
                bytes: 1,
                task_p50_micros: Some(1),
                task_p99_micros: Some(2),
                state: Some(ServerState::Healthy),
                ..Default::default()
            }],
        },
    );
    let rendered = m.render();
    let exported: BTreeSet<String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}; exported: {exported:?}"
    );
    let per_ip: BTreeSet<_> = exported.iter().filter(|n| n.contains("_server_")).collect();
    let unused: Vec<_> = per_ip.iter().filter(|n| !queried.contains(**n)).collect();
    assert!(
        unused.is_empty(),
        "per-IP series without a panel: {unused:?}"
    );
}
