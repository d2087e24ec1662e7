//! The CRD's validation rules, in Rust, for specs that never pass an API server (`vfxt-ingest run` reads a YAML
//! file) and as the operator's defence against objects stored before a CRD upgrade. The messages name the field
//! exactly as the CEL rules do; `tests/crd.rs` checks that both reject the same specs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::job::IngestJobSpec;

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
    if spec.workers == Some(0) {
        bad("spec.workers", "must be at least 1".into());
    }
    if !(1..=1024).contains(&spec.threads_per_worker) {
        bad(
            "spec.threadsPerWorker",
            format!("{} is out of range 1..=1024", spec.threads_per_worker),
        );
    }
    if spec.shards.target == Some(0) {
        bad("spec.shards.target", "must be at least 1".into());
    }
    if spec.run < 0 {
        bad("spec.run", "must not be negative".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errs))
    }
}

/// An IP address, or a DNS-1123 subdomain that is not only digits and dots (a mistyped IP is not a host name).
pub fn is_host(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    if s.is_empty() || s.len() > 253 || s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
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
}
