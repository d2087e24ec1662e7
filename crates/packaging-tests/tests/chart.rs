//! The Helm chart ships what the workspace builds: the same CRD bytes as `crds/` and the workspace version.

use packaging_tests::repo_root;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn chart_crd_is_identical_to_the_generated_one() {
    let name = "ingest.vfxt.dev_ingestjobs.yaml";
    let top = read(&format!("crds/{name}"));
    let chart = read(&format!("charts/vfxt-ingest/crds/{name}"));
    assert!(
        top == chart,
        "charts/vfxt-ingest/crds/{name} differs from crds/{name}; copy it: cp crds/{name} charts/vfxt-ingest/crds/"
    );
    // And both are what the Rust types generate now (the same check as ingest-api's, from the chart's side).
    assert!(
        chart == ingest_api::crd_yaml(),
        "crds/{name} is stale: cargo run -p vfxt-ingest -- crd > crds/{name}"
    );
}

#[test]
fn chart_version_and_app_version_are_the_workspace_version() {
    let cargo: serde_yaml::Value = {
        // Cargo.toml is TOML; the one line we need is `version = "X"` under [workspace.package].
        let text = read("Cargo.toml");
        let section = text
            .split("[workspace.package]")
            .nth(1)
            .expect("[workspace.package] in Cargo.toml");
        let line = section
            .lines()
            .find(|l| l.trim_start().starts_with("version"))
            .expect("workspace version");
        serde_yaml::Value::String(line.split('"').nth(1).expect("quoted version").to_owned())
    };
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/vfxt-ingest/Chart.yaml")).unwrap();
    assert_eq!(chart["appVersion"], cargo, "Chart.yaml appVersion");
    assert_eq!(chart["version"], cargo, "Chart.yaml version");
}
