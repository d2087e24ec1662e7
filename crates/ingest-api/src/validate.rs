//! The CRD's validation rules, in Rust, for specs that never pass an API server (`vfxt-ingest run` reads a YAML
//! file) and as the operator's defence against objects stored before a CRD upgrade. The messages name the field
//! exactly as the CEL rules do; `tests/crd.rs` checks that both reject the same specs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::job::{IngestJobSpec, ThreadsPerWorker};

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.destination.nfs.servers`.
    pub field: String,
    /// What is wrong and what is valid.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All invalid fields of a spec (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Checks everything the CRD schema checks (except immutability, which needs the old object).
pub fn validate_spec(spec: &IngestJobSpec) -> Result<(), SpecErrors> {
    let mut errs = Vec::new();
    let mut bad = |field: &str, message: String| {
        errs.push(FieldError {
            field: field.to_owned(),
            message,
        })
    };

    match (&spec.source.nfs, &spec.source.pvc) {
        (Some(_), Some(_)) | (None, None) => {
            bad("spec.source", "set exactly one of nfs or pvc".into())
        }
        _ => {}
    }
    if let Some(nfs) = &spec.source.nfs {
        if !is_host(&nfs.server) {
            bad(
                "spec.source.nfs.server",
                format!(
                    "{:?} must be an IP address or a DNS-1123 host name",
                    nfs.server
                ),
            );
        }
        if let Err(m) = check_absolute(&nfs.path) {
            bad("spec.source.nfs.path", m);
        }
    }
    if let Some(pvc) = &spec.source.pvc
        && pvc.claim_name.is_empty()
    {
        bad("spec.source.pvc.claimName", "must not be empty".into());
    }
    if let Some(sub) = &spec.source.sub_path
        && let Err(m) = check_relative(sub)
    {
        bad("spec.source.subPath", m);
    }

    let dst = &spec.destination;
    if dst.nfs.servers.is_empty() {
        bad(
            "spec.destination.nfs.servers",
            "list at least one server (the cluster's node addresses)".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for s in &dst.nfs.servers {
        if !is_host(s) {
            bad(
                "spec.destination.nfs.servers",
                format!("{s:?} must be an IP address or a DNS-1123 host name"),
            );
        }
        if !seen.insert(s.as_str()) {
            bad(
                "spec.destination.nfs.servers",
                format!("{s:?} is listed twice; servers must be unique"),
            );
        }
    }
    if let Err(m) = check_absolute(&dst.nfs.path) {
        bad("spec.destination.nfs.path", m);
    }
    if let Some(sub) = &dst.sub_path
        && let Err(m) = check_relative(sub)
    {
        bad("spec.destination.subPath", m);
    }
    if let Some(src) = &spec.source.nfs
        && let Err(m) = check_source_apart(
            (&src.server, &src.path, spec.source.sub_path.as_deref()),
            (&dst.nfs.servers, &dst.nfs.path, dst.sub_path.as_deref()),
        )
    {
        bad("spec.destination", m);
    }
    if spec.workers == Some(0) {
        bad("spec.workers", "must be at least 1".into());
    }
    if let ThreadsPerWorker::Fixed(n) = spec.threads_per_worker
        && !ThreadsPerWorker::RANGE.contains(&n)
    {
        bad(
            "spec.threadsPerWorker",
            format!("must be an integer 1..1024 or \"auto\" (got {n})"),
        );
    }
    if spec.shards.target == Some(0) {
        bad("spec.shards.target", "must be at least 1".into());
    }
    if let Some(l) = &spec.limits {
        for (field, v) in [
            ("spec.limits.bytesPerSecond", l.bytes_per_second),
            ("spec.limits.filesPerSecond", l.files_per_second),
        ] {
            if v == Some(0) {
                bad(
                    field,
                    "must be at least 1 (leave it out for no limit)".into(),
                );
            }
        }
        if let Err((field, message)) = l.schedule() {
            bad(&field, message);
        }
        for (i, w) in l.windows.iter().enumerate() {
            for (name, v) in [
                ("bytesPerSecond", w.bytes_per_second),
                ("filesPerSecond", w.files_per_second),
            ] {
                if v == Some(0) {
                    bad(
                        &format!("spec.limits.windows[{i}].{name}"),
                        "must be at least 1 (leave it out for no limit)".into(),
                    );
                }
            }
        }
    }
    if spec.run < 0 {
        bad("spec.run", "must not be negative".into());
    }
    for (field, map, reserved) in [
        (
            "spec.worker.labels",
            &spec.worker.labels,
            &[
                crate::constants::GROUP,
                crate::constants::labels::MANAGED_BY,
            ][..],
        ),
        (
            "spec.worker.annotations",
            &spec.worker.annotations,
            &[crate::constants::GROUP][..],
        ),
    ] {
        for (key, value) in map.iter().flatten() {
            if let Err(m) = check_metadata_key(key, reserved) {
                bad(field, format!("{key:?}: {m}"));
            }
            if field == "spec.worker.labels"
                && let Err(m) = check_label_value(value)
            {
                bad(field, format!("{key:?}: value {value:?} {m}"));
            }
        }
    }
    if let Err((field, message)) = spec.filter.to_spec() {
        bad(&field, message);
    }
    if let Err((field, message)) = spec.mirror_limit() {
        bad(&field, message);
    }
    if spec.verify.scope == crate::job::VerifyScope::Changed
        && spec.verify.mode != crate::job::VerifyMode::Checksum
    {
        bad(
            "spec.verify.scope",
            "Changed applies to mode: Checksum (it says whose content is read; Metadata reads none)"
                .into(),
        );
    }
    if let Some(report) = &spec.report {
        if report.pvc.is_some() == report.destination_path.is_some() {
            bad(
                "spec.report",
                "set exactly one of pvc or destinationPath".into(),
            );
        }
        if let Some(pvc) = &report.pvc {
            if pvc.claim_name.is_empty() {
                bad("spec.report.pvc.claimName", "must not be empty".into());
            }
            if let Some(sub) = &pvc.sub_path
                && let Err(m) = check_relative(sub)
            {
                bad("spec.report.pvc.subPath", m);
            }
        }
        if let Some(dp) = &report.destination_path {
            if let Err(m) = check_relative(dp) {
                bad("spec.report.destinationPath", m);
            } else if let Err(m) = check_report_outside_copy(dp, dst.sub_path.as_deref()) {
                bad("spec.report.destinationPath", m);
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errs))
    }
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters (alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric); not one of
/// `reserved` (a prefix, or a whole key).
fn check_metadata_key(key: &str, reserved: &[&str]) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.len() > 253 || !is_dns_subdomain(p))
    {
        return Err("the prefix before '/' must be a DNS subdomain (example.com)".into());
    }
    if !is_label_name(name) {
        return Err(
            "the name must be 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into(),
        );
    }
    if reserved.iter().any(|r| {
        key == *r || prefix == Some(*r) || prefix.is_some_and(|p| p.ends_with(&format!(".{r}")))
    }) {
        return Err(format!(
            "is the operator's own ({}); choose a key of your own",
            reserved.join(", ")
        ));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A label value: empty, or what a label name may be.
fn check_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err("must be empty or 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into())
    }
}

/// An IP address, or a DNS-1123 subdomain that is not only digits and dots (a mistyped IP is not a host name).
pub fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && is_dns_subdomain(s)
}

/// A DNS-1123 subdomain: dot-separated labels of lowercase letters, digits and '-', each starting
/// and ending with a letter or digit, at most 253 characters in all. Kubernetes requires it of
/// an IngestJob's name, and it can name no other directory than its own (no '/', no '..').
pub fn is_dns_subdomain(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// An IngestJob's `metadata.name`, as the API server checks it (`vfxt-ingest run` names its state
/// directory after it, so it must not reach outside).
pub fn check_object_name(name: &str) -> Result<(), String> {
    if is_dns_subdomain(name) {
        return Ok(());
    }
    Err(format!(
        "{name:?} must be a DNS-1123 subdomain, as Kubernetes requires of an object's name: \
         lowercase letters, digits, '-' and '.', at most 253 characters, starting and ending \
         with a letter or digit (for example \"nightly-sync\")"
    ))
}

fn has_dotdot(p: &str) -> bool {
    p.split('/').any(|seg| seg == "..")
}

fn check_absolute(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || has_dotdot(p) {
        return Err(format!(
            "{p:?} must be an absolute path (start with '/') without a '..' segment"
        ));
    }
    Ok(())
}

fn check_relative(p: &str) -> Result<(), String> {
    if p.starts_with('/') || has_dotdot(p) {
        return Err(format!(
            "{p:?} must be a relative path (no leading '/') without a '..' segment"
        ));
    }
    Ok(())
}

/// The source tree (`server`, export `path`, `subPath`) must not overlap the destination's on the
/// same server: a destination inside the source would be copied into itself as it is written,
/// and a source inside the destination would be written over, and deleted by a mirror (the pods
/// mount the two apart, so the engine's own check of local paths cannot see it). One export seen
/// at another address of the cluster, or under another name, is not told apart here: only the
/// same server name is. The scan pod makes the same check of a source it finds NFS-mounted (a
/// PVC's volume, whose server the spec does not name).
pub fn check_source_apart(
    (server, path, sub): (&str, &str, Option<&str>),
    (servers, dst_path, dst_sub): (&[String], &str, Option<&str>),
) -> Result<(), String> {
    if !servers.iter().any(|s| s.eq_ignore_ascii_case(server)) {
        return Ok(());
    }
    fn tree<'a>(path: &'a str, sub: Option<&'a str>) -> Vec<&'a str> {
        let mut t = crate::job::path_segments(path);
        t.extend(sub.map(crate::job::path_segments).unwrap_or_default());
        t
    }
    let (source, dest) = (tree(path, sub), tree(dst_path, dst_sub));
    let shown = |t: &[&str]| format!("{server}:/{}", t.join("/"));
    let why = if source == dest {
        "is the source tree itself"
    } else if dest.starts_with(&source) {
        "is inside the source tree: the copy would copy what it writes"
    } else if source.starts_with(&dest) {
        "holds the source tree: the copy would write over the source, and a mirror would delete it"
    } else {
        return Ok(());
    };
    Err(format!(
        "{} {why} ({}); copy into a directory beside the source (spec.destination.subPath)",
        shown(&dest),
        shown(&source)
    ))
}

/// `spec.report.destinationPath` must not be in the copied tree (`spec.destination.subPath`, the whole export
/// when unset), where the verify pass would find the reports as extraneous entries, nor contain it.
fn check_report_outside_copy(dp: &str, dest_sub: Option<&str>) -> Result<(), String> {
    let report = crate::job::path_segments(dp);
    if report.is_empty() {
        return Err(format!(
            "{dp:?} names the export root, which holds the copied tree; name a directory beside spec.destination.subPath, e.g. \"vfxt-ingest-reports\""
        ));
    }
    let copied = dest_sub.map(crate::job::path_segments).unwrap_or_default();
    if copied.is_empty() {
        return Err(format!(
            "{dp:?} is inside the copied tree (spec.destination.subPath is not set, so the whole export is copied); set spec.destination.subPath and name a directory beside it, or use spec.report.pvc"
        ));
    }
    if report.starts_with(&copied) || copied.starts_with(&report) {
        let sub = copied.join("/");
        return Err(format!(
            "{dp:?} overlaps the copied tree spec.destination.subPath {sub:?} (the verify pass would find the reports there); name a directory beside it, e.g. \"vfxt-ingest-reports\", or use spec.report.pvc"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in ["10.1.1.101", "fd00::1", "vfxt-node-1.example.com", "nas"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in [
            "",
            "10.0.0.300",
            "1.2.3",
            "Upper.example",
            "-x",
            "a..b",
            "under_score",
            "x/y",
        ] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    fn job(threads: Option<&str>) -> String {
        let mut y = String::from(
            "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {name: t}\nspec:\n  \
             source: {nfs: {server: 10.0.0.5, path: /export}}\n  \
             destination: {nfs: {servers: [10.1.1.101], path: /nfs}}\n",
        );
        if let Some(t) = threads {
            y.push_str(&format!("  threadsPerWorker: {t}\n"));
        }
        y
    }

    fn parse(threads: Option<&str>) -> Result<crate::IngestJob, serde_yaml::Error> {
        serde_yaml::from_str(&job(threads))
    }

    fn with_worker(worker: &str) -> crate::IngestJobSpec {
        let y = format!("{}  worker: {worker}\n", job(None));
        serde_yaml::from_str::<crate::IngestJob>(&y).unwrap().spec
    }

    fn with(extra: &str) -> crate::IngestJobSpec {
        let y = format!("{}{extra}", job(None));
        serde_yaml::from_str::<crate::IngestJob>(&y).unwrap().spec
    }

    /// A source on one of the destination's servers whose tree overlaps the destination's is
    /// refused, naming both trees; beside each other, or on another server, they are fine.
    #[test]
    fn a_source_and_destination_that_overlap_on_one_server_are_refused() {
        let spec = |source: &str, dest: &str| {
            let y = format!(
                "apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {{name: t}}\nspec:\n  source: {source}\n  destination: {dest}\n"
            );
            serde_yaml::from_str::<crate::IngestJob>(&y).unwrap().spec
        };
        let on = |server: &str, path: &str, sub: &str| {
            format!("{{nfs: {{server: {server}, path: {path}}}{sub}}}")
        };
        let to = |path: &str, sub: &str| {
            format!("{{nfs: {{servers: [10.1.1.101, 10.1.1.102], path: {path}}}{sub}}}")
        };
        for (source, dest, words) in [
            (
                on("10.1.1.102", "/data", ""),
                to("/data", ""),
                "is the source tree itself",
            ),
            (
                on("10.1.1.101", "/data", ""),
                to("/data", ", subPath: copy"),
                "10.1.1.101:/data/copy is inside the source tree",
            ),
            (
                on("10.1.1.101", "/data", ", subPath: projects"),
                to("/data", ""),
                "holds the source tree: the copy would write over the source, and a mirror would delete it (10.1.1.101:/data/projects)",
            ),
            (
                on("10.1.1.101", "/", ""),
                to("/data/./x", ""),
                "is inside the source tree",
            ),
        ] {
            let errs = validate_spec(&spec(&source, &dest)).unwrap_err();
            let e = errs
                .0
                .iter()
                .find(|e| e.field == "spec.destination")
                .unwrap_or_else(|| panic!("{source} {dest}: {errs}"));
            assert!(e.message.contains(words), "{source} {dest}: {}", e.message);
            assert!(
                e.message.contains("spec.destination.subPath"),
                "{}",
                e.message
            );
        }
        for (source, dest) in [
            // Beside each other on one server.
            (
                on("10.1.1.101", "/data", ", subPath: projects"),
                to("/data", ", subPath: projects-copy"),
            ),
            (on("10.1.1.101", "/data", ""), to("/data2", "")),
            // Another server (the usual case: a filer to the cache cluster).
            (on("10.0.0.5", "/data", ""), to("/data", "")),
        ] {
            assert_eq!(
                validate_spec(&spec(&source, &dest)),
                Ok(()),
                "{source} {dest}"
            );
        }
    }

    /// Each wrong part of a schedule, a mirror's limit or a verify scope is refused naming its
    /// field and what would be valid.
    #[test]
    fn schedules_mirror_limits_and_verify_scopes_are_checked_naming_the_field() {
        let ok = with(
            "  limits: {timeZone: Europe/Berlin, windows: [{days: [Weekdays], start: '08:00', end: '18:00', bytesPerSecond: 104857600}]}\n  mode: Mirror\n  maxDeletes: '2%'\n  verify: {mode: Checksum, scope: Changed}\n",
        );
        assert_eq!(validate_spec(&ok), Ok(()));
        for (extra, field, words) in [
            (
                "  limits: {timeZone: Mars/Olympus}\n",
                "spec.limits.timeZone",
                "IANA",
            ),
            (
                "  limits: {windows: [{days: [Monday], start: '08:00', end: '18:00'}]}\n",
                "spec.limits.windows[0].days[0]",
                "Weekdays",
            ),
            (
                "  limits: {windows: [{days: [Mon], start: '8am', end: '18:00'}]}\n",
                "spec.limits.windows[0].start",
                "HH:MM",
            ),
            (
                "  limits: {windows: [{days: [], start: '08:00', end: '18:00'}]}\n",
                "spec.limits.windows[0].days",
                "at least one day",
            ),
            ("  maxDeletes: 5\n", "spec.maxDeletes", "mode: Mirror"),
            (
                "  mode: Mirror\n  maxDeletes: '120%'\n",
                "spec.maxDeletes",
                "0..=100",
            ),
            (
                "  mode: Mirror\n  maxDeletes: -3\n",
                "spec.maxDeletes",
                "negative",
            ),
            (
                "  verify: {scope: Changed}\n",
                "spec.verify.scope",
                "Checksum",
            ),
        ] {
            let err = validate_spec(&with(extra)).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(words), "{extra}: {err}");
        }
    }

    #[test]
    fn pod_labels_and_annotations_of_the_operators_own_are_refused_naming_the_field() {
        let ok = with_worker(
            "{labels: {cost-center: r-42, example.com/team: storage, empty: ''}, annotations: {note: 'any text at all'}}",
        );
        assert_eq!(validate_spec(&ok), Ok(()));
        for (worker, field, words) in [
            (
                "{labels: {ingest.vfxt.dev/role: x}}",
                "spec.worker.labels",
                "operator's own",
            ),
            (
                "{labels: {app.kubernetes.io/managed-by: me}}",
                "spec.worker.labels",
                "operator's own",
            ),
            (
                "{labels: {sub.ingest.vfxt.dev/x: y}}",
                "spec.worker.labels",
                "operator's own",
            ),
            (
                "{annotations: {ingest.vfxt.dev/ingestjob: x}}",
                "spec.worker.annotations",
                "operator's own",
            ),
            (
                "{labels: {'bad key!': x}}",
                "spec.worker.labels",
                "1-63 characters",
            ),
            (
                "{labels: {'Not_A.Domain/x': y}}",
                "spec.worker.labels",
                "DNS subdomain",
            ),
            (
                "{labels: {team: 'has space'}}",
                "spec.worker.labels",
                "value \"has space\"",
            ),
        ] {
            let errs = validate_spec(&with_worker(worker)).expect_err(worker);
            assert_eq!(errs.0.len(), 1, "{worker}: {errs}");
            assert_eq!(errs.0[0].field, field, "{worker}");
            assert!(errs.to_string().contains(words), "{worker}: {errs}");
        }
        // A value may hold anything in an annotation.
        assert_eq!(
            validate_spec(&with_worker("{annotations: {team: 'has space'}}")),
            Ok(())
        );
    }

    #[test]
    fn threads_per_worker_is_an_integer_1_to_1024_or_auto() {
        for (text, want) in [
            (None, ThreadsPerWorker::Fixed(16)),
            (Some("1"), ThreadsPerWorker::Fixed(1)),
            (Some("32"), ThreadsPerWorker::Fixed(32)),
            (Some("1024"), ThreadsPerWorker::Fixed(1024)),
            (Some("auto"), ThreadsPerWorker::Auto),
            (Some("\"auto\""), ThreadsPerWorker::Auto),
        ] {
            let ij = parse(text).unwrap();
            assert_eq!(ij.spec.threads_per_worker, want, "{text:?}");
            assert_eq!(validate_spec(&ij.spec), Ok(()), "{text:?}");
        }
        for n in ["0", "2000", "1025"] {
            let ij = parse(Some(n)).unwrap();
            let errs = validate_spec(&ij.spec).expect_err(n);
            assert_eq!(errs.0.len(), 1, "{errs}");
            assert_eq!(errs.0[0].field, "spec.threadsPerWorker");
            assert_eq!(
                errs.to_string(),
                format!("spec.threadsPerWorker: must be an integer 1..1024 or \"auto\" (got {n})")
            );
        }
    }

    #[test]
    fn threads_per_worker_other_strings_are_refused_naming_the_field() {
        // Not a value validate_spec could see: reading the YAML already fails, with the field's path.
        for bad in ["fast", "\"16\"", "Auto", "-1", "5000000000", "1.5"] {
            let err = parse(Some(bad)).expect_err(bad).to_string();
            assert!(
                err.contains("spec.threadsPerWorker")
                    && err.contains("an integer 1..1024 or \"auto\""),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn threads_per_worker_yaml_round_trip() {
        use serde_json::json;
        for (text, written, as_json) in [
            ("auto", "threadsPerWorker: auto\n", json!("auto")),
            ("48", "threadsPerWorker: 48\n", json!(48)),
        ] {
            let ij = parse(Some(text)).unwrap();
            let yaml = serde_yaml::to_string(&ij).unwrap();
            assert!(yaml.contains(written), "{yaml}");
            let again: crate::IngestJob = serde_yaml::from_str(&yaml).unwrap();
            assert_eq!(again.spec, ij.spec);
            // JSON (what the API server stores): an integer stays a number, auto a string.
            let value = serde_json::to_value(&ij.spec).unwrap();
            assert_eq!(value["threadsPerWorker"], as_json);
            let back: crate::IngestJobSpec = serde_json::from_value(value).unwrap();
            assert_eq!(back, ij.spec);
        }
    }

    #[test]
    fn paths() {
        assert!(check_absolute("/export/a").is_ok());
        assert!(
            check_absolute("/export/..a/b..").is_ok(),
            "'..a' is a name, not a parent reference"
        );
        assert!(check_absolute("export").is_err());
        assert!(check_absolute("/export/../etc").is_err());
        assert!(check_absolute("/export/..").is_err());
        assert!(check_relative("a/b").is_ok());
        assert!(check_relative("/a").is_err());
        assert!(check_relative("../a").is_err());
    }

    fn with_report(dest_sub: Option<&str>, report: serde_json::Value) -> crate::IngestJobSpec {
        let mut v = serde_json::json!({
            "source": {"nfs": {"server": "10.0.0.5", "path": "/export"}},
            "destination": {"nfs": {"servers": ["10.1.1.101"], "path": "/nfs"}},
            "report": report,
        });
        if let Some(s) = dest_sub {
            v["destination"]["subPath"] = s.into();
        }
        serde_json::from_value(v).unwrap()
    }

    fn report_errors(spec: &crate::IngestJobSpec) -> Vec<FieldError> {
        validate_spec(spec).err().map(|e| e.0).unwrap_or_default()
    }

    #[test]
    fn report_destination_path_beside_the_copied_tree_is_valid() {
        use serde_json::json;
        for (sub, dp) in [
            ("projects", "vfxt-ingest-reports"),
            ("data/projects", "data/reports"),
            ("projects", "projects-reports"),
            ("a/b", "a/bb/reports"),
        ] {
            let spec = with_report(Some(sub), json!({"destinationPath": dp}));
            assert_eq!(validate_spec(&spec), Ok(()), "{sub} {dp}");
        }
        let spec = with_report(
            None,
            json!({"pvc": {"claimName": "reports", "subPath": "ingest"}}),
        );
        assert_eq!(validate_spec(&spec), Ok(()));
    }

    #[test]
    fn report_destination_path_in_the_copied_tree_is_refused_naming_the_field() {
        use serde_json::json;
        for (sub, dp, says) in [
            (None, "reports", "spec.destination.subPath is not set"),
            (Some(""), "reports", "spec.destination.subPath is not set"),
            (Some("projects"), "projects", "overlaps the copied tree"),
            (
                Some("projects"),
                "projects/reports",
                "overlaps the copied tree",
            ),
            (
                Some("projects/"),
                "./projects//r",
                "overlaps the copied tree",
            ),
            (Some("data/projects"), "data", "overlaps the copied tree"),
            (Some("projects"), ".", "names the export root"),
            (Some("projects"), "/abs", "must be a relative path"),
            (Some("projects"), "x/../projects", "without a '..' segment"),
        ] {
            let errs = report_errors(&with_report(sub, json!({"destinationPath": dp})));
            assert_eq!(errs.len(), 1, "{sub:?} {dp}: {errs:?}");
            assert_eq!(errs[0].field, "spec.report.destinationPath", "{sub:?} {dp}");
            assert!(errs[0].message.contains(says), "{sub:?} {dp}: {}", errs[0]);
        }
        let msg = report_errors(&with_report(
            Some("projects"),
            json!({"destinationPath": "projects/r"}),
        ))[0]
            .to_string();
        assert!(
            msg.contains("vfxt-ingest-reports") && msg.contains("spec.report.pvc"),
            "{msg}"
        );
    }

    #[test]
    fn report_needs_exactly_one_target_and_a_relative_pvc_sub_path() {
        use serde_json::json;
        for (report, field) in [
            (json!({}), "spec.report"),
            (
                json!({"pvc": {"claimName": "r"}, "destinationPath": "reports"}),
                "spec.report",
            ),
            (
                json!({"pvc": {"claimName": ""}}),
                "spec.report.pvc.claimName",
            ),
            (
                json!({"pvc": {"claimName": "r", "subPath": "/x"}}),
                "spec.report.pvc.subPath",
            ),
        ] {
            let errs = report_errors(&with_report(Some("projects"), report.clone()));
            assert!(errs.iter().any(|e| e.field == field), "{report}: {errs:?}");
        }
    }

    #[test]
    fn report_location_names_the_run_directory() {
        use serde_json::json;
        let spec = with_report(Some("projects"), json!({"destinationPath": "reports/"}));
        let r = spec.report.as_ref().unwrap();
        assert_eq!(r.run_dir("ij", 3), "reports/ij/run-3");
        assert_eq!(
            r.location(&spec, "ij", 3),
            "10.1.1.101:/nfs/reports/ij/run-3/"
        );
        let spec = with_report(None, json!({"pvc": {"claimName": "rep"}}));
        let r = spec.report.as_ref().unwrap();
        assert_eq!(r.run_dir("ij", 0), "ij/run-0");
        assert_eq!(r.location(&spec, "ij", 0), "pvc rep:/ij/run-0/");
    }
}
