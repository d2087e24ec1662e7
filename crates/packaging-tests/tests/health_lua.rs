//! The Argo CD health check (`deploy/argocd/health.lua`) judges statuses the operator really writes: every
//! sample of `packaging_tests::samples` (built with the operator's status code) is handed to the Lua script the
//! way Argo CD does (global `obj`) and the verdict checked. Runs Debian's `lua5.4` (`apt-get install lua5.4`);
//! Argo CD embeds Lua 5.1, and the script avoids everything 5.1 lacks.

use std::io::Write;
use std::process::{Command, Stdio};

use ingest_api::IngestJob;
use packaging_tests::samples::samples;
use packaging_tests::{lua_literal, repo_root};

const LUA: &str = "lua5.4";

/// Runs health.lua on `obj`; returns (status, message).
fn health(obj: &IngestJob) -> (String, String) {
    let script = repo_root().join("deploy/argocd/health.lua");
    let json = serde_json::to_value(obj).unwrap();
    let driver = format!(
        "obj = {}\nlocal hs = assert(loadfile({:?}))()\nio.write(hs.status, \"\\n\", hs.message)\n",
        lua_literal(&json),
        script.to_str().unwrap()
    );
    let out = Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(driver.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("cannot run {LUA} ({e}); install it: apt-get install lua5.4"));
    assert!(
        out.status.success(),
        "health.lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("status and message");
    (status.to_owned(), message.to_owned())
}

#[test]
fn every_sample_gets_the_expected_argo_health() {
    let all = samples();
    assert!(
        all.len() >= 8,
        "the samples cover unseen, running, finished, failed, invalid and stale states"
    );
    let mut wrong = Vec::new();
    for s in &all {
        let (status, message) = health(&s.object);
        if status != s.argo || !message.contains(s.argo_message) {
            wrong.push(format!(
                "{}: got {status} {message:?}, expected {} containing {:?}",
                s.name, s.argo, s.argo_message
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "health.lua disagrees:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_samples_are_in_the_phases_they_claim() {
    use ingest_api::Phase;
    let phase = |name: &str| {
        samples()
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.object.status)
            .and_then(|st| st.phase)
    };
    assert_eq!(phase("copying"), Some(Phase::Copying));
    assert_eq!(phase("succeeded"), Some(Phase::Succeeded));
    assert_eq!(phase("shard-failed"), Some(Phase::Failed));
    assert_eq!(phase("unseen"), None);
}
