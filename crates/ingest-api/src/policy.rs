//! The admin policy: what the IngestJobs of a namespace may reach and run, set by whoever installs
//! the operator (the chart's `policy` values). Anyone who may create an IngestJob otherwise picks
//! the NFS servers the operator mounts, the worker image, the pods' service account and a root uid
//! with DAC capabilities.
//!
//! The same JSON reaches two checkers, so that each holds where the other is missing:
//! - the chart's ValidatingAdmissionPolicy (CEL, `charts/vfxt-ingest/templates/admission-policy.yaml`)
//!   refuses a violating IngestJob at `kubectl apply`, naming the rule;
//! - the operator ([`NamespaceRules::check`], from `--policy`) refuses to run one that got in anyway
//!   (created before the policy, a cluster without the admission policy): condition `Ready=False`,
//!   reason `PolicyDenied`, the message naming the rule.
//!
//! Both read the policy the same way: the namespace's entry in `namespaces` if there is one (whole: it
//! does not inherit from `default`), else `default`; a rule that is not set does not restrict, except
//! `images` (default: the operator's worker image) and `allowServiceAccount` (default: false).
//! `tests/packaging` renders the chart and `tests/e2e/operator` checks each rule on a real API server
//! against this module's table ([`tests`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::job::{IngestJobSpec, ThreadsPerWorker};

/// The whole policy: rules per namespace, and for every other namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionPolicy {
    /// Rules of namespaces not listed in `namespaces`.
    #[serde(default)]
    pub default: NamespaceRules,
    /// Rules of one namespace, replacing `default` whole.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceRules>,
}

/// What the IngestJobs of one namespace may do. `None`: not restricted (see each field).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceRules {
    /// NFS servers (source and destination) allowed: host names or IP addresses, compared as
    /// written, and CIDRs (`10.1.0.0/16`), which hold the IP addresses in them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
    /// Export paths allowed (source and destination `nfs.path`): each one and everything below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_paths: Option<Vec<String>>,
    /// Worker images an IngestJob may name in `spec.worker.image`: exact references, or prefixes
    /// ending in `*` (`myacr.azurecr.io/vfxt-ingest:*`). Default: only the operator's worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Whether an IngestJob may name its pods' service account (`spec.worker.serviceAccountName`).
    /// Default false: the pods run as the identity the operator makes for the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_service_account: Option<bool>,
    /// Whether worker pods may run as uid 0 (the default uid: keeping owners needs it). False: an
    /// IngestJob must set `spec.worker.securityContext.runAsUser` to another uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_root: Option<bool>,
    /// Whether worker pods running as root get DAC_OVERRIDE, FOWNER and FSETID (read every file,
    /// set times and modes on any). False: they run without them (CHOWN stays, for owners), and
    /// what root cannot read without them is reported per file. Built in, not refused: no
    /// IngestJob field asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_dac_capabilities: Option<bool>,
    /// Most copy pods of one IngestJob (`spec.workers`; unset: one per destination server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u32>,
    /// Most copy threads of one pod (`spec.threadsPerWorker`); `auto`, which may start up to 64
    /// per mount, is refused when this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_threads_per_worker: Option<u32>,
}

/// A rule of [`NamespaceRules`], named as in the policy (what messages and tests go by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    Servers,
    ExportPaths,
    Images,
    ServiceAccount,
    Root,
    MaxWorkers,
    MaxThreadsPerWorker,
}

impl Rule {
    /// The rule's name in the policy (and in every refusal).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Servers => "servers",
            Rule::ExportPaths => "exportPaths",
            Rule::Images => "images",
            Rule::ServiceAccount => "allowServiceAccount",
            Rule::Root => "allowRoot",
            Rule::MaxWorkers => "maxWorkers",
            Rule::MaxThreadsPerWorker => "maxThreadsPerWorker",
        }
    }
}

/// One rule an IngestJob breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    /// What breaks it and what would be allowed.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "admin policy rule {}: {}",
            self.rule.as_str(),
            self.message
        )
    }
}

/// What the operator adds to a job's own settings: the worker image it uses when the job names
/// none, and the pods' uid when the job sets none (the chart's `worker` defaults, else 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorDefaults {
    pub image: String,
    pub uid: i64,
}

impl AdmissionPolicy {
    /// Parses `--policy` JSON; an unknown field is an error naming it (a misspelt rule must not
    /// silently allow everything).
    pub fn from_json(json: &str) -> Result<AdmissionPolicy, String> {
        if json.trim().is_empty() {
            return Ok(AdmissionPolicy::default());
        }
        let policy: AdmissionPolicy = serde_json::from_str(json).map_err(|e| e.to_string())?;
        policy.check_itself()?;
        Ok(policy)
    }

    /// The rules of `namespace`.
    pub fn rules(&self, namespace: &str) -> &NamespaceRules {
        self.namespaces.get(namespace).unwrap_or(&self.default)
    }

    fn check_itself(&self) -> Result<(), String> {
        let all = std::iter::once(("default".to_string(), &self.default)).chain(
            self.namespaces
                .iter()
                .map(|(ns, r)| (format!("namespaces.{ns}"), r)),
        );
        for (at, r) in all {
            for s in r.servers.iter().flatten() {
                if s.contains('/') && parse_cidr(s).is_none() {
                    return Err(format!(
                        "{at}.servers: {s:?} is not a CIDR (address/prefix length, e.g. 10.1.0.0/16)"
                    ));
                }
            }
            for p in r.export_paths.iter().flatten() {
                if !p.starts_with('/') {
                    return Err(format!("{at}.exportPaths: {p:?} is not an absolute path"));
                }
            }
        }
        Ok(())
    }
}

impl NamespaceRules {
    /// Whether root pods get the DAC capabilities.
    pub fn dac_capabilities(&self) -> bool {
        self.allow_dac_capabilities.unwrap_or(true)
    }

    /// Every rule `spec` breaks, in [`Rule`] order; empty: allowed.
    pub fn check(&self, spec: &IngestJobSpec, defaults: &OperatorDefaults) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut deny = |rule, message| out.push(Violation { rule, message });
        let source = spec.source.nfs.as_ref();
        let dest = &spec.destination.nfs;
        if let Some(allowed) = &self.servers {
            let denied: Vec<&str> = source
                .map(|s| s.server.as_str())
                .into_iter()
                .chain(dest.servers.iter().map(String::as_str))
                .filter(|h| !allowed.iter().any(|a| host_allowed(a, h)))
                .collect();
            if !denied.is_empty() {
                deny(
                    Rule::Servers,
                    format!(
                        "{} not allowed (allowed: {})",
                        denied.join(", "),
                        list(allowed)
                    ),
                );
            }
        }
        if let Some(allowed) = &self.export_paths {
            let denied: Vec<&str> = source
                .map(|s| s.path.as_str())
                .into_iter()
                .chain([dest.path.as_str()])
                .filter(|p| !allowed.iter().any(|a| path_allowed(a, p)))
                .collect();
            if !denied.is_empty() {
                deny(
                    Rule::ExportPaths,
                    format!(
                        "export path {} not allowed (allowed: {} and below)",
                        denied.join(", "),
                        list(allowed)
                    ),
                );
            }
        }
        let worker = &spec.worker;
        if let Some(image) = worker.image.as_deref() {
            let default = [defaults.image.clone()];
            let allowed = self.images.as_deref().unwrap_or(&default);
            if !allowed.iter().any(|a| image_allowed(a, image)) {
                deny(
                    Rule::Images,
                    format!(
                        "spec.worker.image {image} not allowed (allowed: {})",
                        list(allowed)
                    ),
                );
            }
        }
        if let Some(sa) = worker.service_account_name.as_deref()
            && !self.allow_service_account.unwrap_or(false)
        {
            deny(
                Rule::ServiceAccount,
                format!(
                    "spec.worker.serviceAccountName {sa} not allowed: pods run as the identity the operator makes for the job"
                ),
            );
        }
        let uid = worker
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .unwrap_or(defaults.uid);
        if uid == 0 && !self.allow_root.unwrap_or(true) {
            deny(
                Rule::Root,
                "worker pods may not run as root: set spec.worker.securityContext.runAsUser to a non-zero uid that can read the source".into(),
            );
        }
        if let Some(max) = self.max_workers {
            let workers = spec.workers.unwrap_or(dest.servers.len() as u32);
            if workers > max {
                let what = if spec.workers.is_some() {
                    "spec.workers"
                } else {
                    "spec.workers (unset: one per destination server)"
                };
                deny(
                    Rule::MaxWorkers,
                    format!("{what} is {workers}, at most {max} allowed"),
                );
            }
        }
        if let Some(max) = self.max_threads_per_worker {
            match spec.threads_per_worker {
                ThreadsPerWorker::Fixed(n) if n <= max => {}
                ThreadsPerWorker::Fixed(n) => deny(
                    Rule::MaxThreadsPerWorker,
                    format!("spec.threadsPerWorker is {n}, at most {max} allowed"),
                ),
                ThreadsPerWorker::Auto => deny(
                    Rule::MaxThreadsPerWorker,
                    format!(
                        "spec.threadsPerWorker auto may start up to 64 per mount; set a count of at most {max}"
                    ),
                ),
            }
        }
        out
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// `allowed` is the host as written, or a CIDR that holds the IP address `host`.
fn host_allowed(allowed: &str, host: &str) -> bool {
    if allowed == host {
        return true;
    }
    match (parse_cidr(allowed), host.parse::<IpAddr>()) {
        (Some((net, bits)), Ok(ip)) => in_cidr(net, bits, ip),
        _ => false,
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn in_cidr(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// `path` is `allowed` or below it, component-wise (`/export` allows `/export/a`, not `/exports`).
/// Paths never hold `..` here: the CRD refuses them. Written as the chart's CEL says it.
fn path_allowed(allowed: &str, path: &str) -> bool {
    let dir = if allowed.ends_with('/') {
        allowed.to_owned()
    } else {
        format!("{allowed}/")
    };
    format!("{path}/").starts_with(&dir)
}

/// An exact reference, or a prefix ending in `*`.
fn image_allowed(allowed: &str, image: &str) -> bool {
    match allowed.strip_suffix('*') {
        Some(prefix) => image.starts_with(prefix),
        None => allowed == image,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::job::{WorkerSecurity, WorkerTemplate};

    fn spec() -> IngestJobSpec {
        serde_json::from_str(
            r#"{"source": {"nfs": {"server": "10.0.0.5", "path": "/export"}},
                "destination": {"nfs": {"servers": ["10.1.1.101", "10.1.1.102"], "path": "/nfs/team"}}}"#,
        )
        .unwrap()
    }

    fn defaults() -> OperatorDefaults {
        OperatorDefaults {
            image: "vfxt-ingest:1".into(),
            uid: 0,
        }
    }

    fn rules(json: &str) -> NamespaceRules {
        serde_json::from_str(json).unwrap()
    }

    fn broken(r: &NamespaceRules, s: &IngestJobSpec) -> Vec<&'static str> {
        r.check(s, &defaults())
            .iter()
            .map(|v| v.rule.as_str())
            .collect()
    }

    fn with_worker(f: impl FnOnce(&mut WorkerTemplate)) -> IngestJobSpec {
        let mut s = spec();
        let mut w = WorkerTemplate::default();
        f(&mut w);
        s.worker = w;
        s
    }

    #[test]
    fn no_policy_allows_what_the_operator_always_ran() {
        assert!(broken(&NamespaceRules::default(), &spec()).is_empty());
        assert!(NamespaceRules::default().dac_capabilities());
    }

    #[test]
    fn servers_are_hosts_as_written_or_cidrs_holding_the_address() {
        let r = rules(r#"{"servers": ["10.0.0.5", "10.1.1.0/24"]}"#);
        assert!(broken(&r, &spec()).is_empty());
        let r = rules(r#"{"servers": ["10.1.1.0/24"]}"#);
        let v = r.check(&spec(), &defaults());
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].rule, Rule::Servers);
        assert!(
            v[0].to_string().contains("10.0.0.5 not allowed"),
            "{}",
            v[0]
        );
        // A name is not an address in a CIDR; a /0 holds every address of its family only.
        let mut s = spec();
        s.destination.nfs.servers = vec!["cache.example.com".into(), "fd00::1".into()];
        let r = rules(r#"{"servers": ["0.0.0.0/0"]}"#);
        let v = r.check(&s, &defaults());
        assert!(
            v[0].message
                .starts_with("cache.example.com, fd00::1 not allowed"),
            "{}",
            v[0]
        );
        let r = rules(r#"{"servers": ["0.0.0.0/0", "::/0", "cache.example.com"]}"#);
        assert!(broken(&r, &s).is_empty());
        assert!(!host_allowed("10.1.1.0/25", "10.1.1.200"));
        assert!(host_allowed("10.1.1.128/25", "10.1.1.200"));
        assert!(host_allowed("10.1.1.7/32", "10.1.1.7"));
    }

    #[test]
    fn export_paths_allow_themselves_and_below_component_wise() {
        let r = rules(r#"{"exportPaths": ["/export", "/nfs/team/"]}"#);
        assert!(broken(&r, &spec()).is_empty());
        let mut s = spec();
        s.destination.nfs.path = "/nfs/teams".into();
        assert_eq!(broken(&r, &s), ["exportPaths"]);
        s.destination.nfs.path = "/nfs/team/a/b".into();
        assert!(broken(&r, &s).is_empty());
        assert!(path_allowed("/", "/anything"));
    }

    #[test]
    fn images_default_to_the_operators_and_take_prefixes() {
        let none = NamespaceRules::default();
        let own = with_worker(|w| w.image = Some("vfxt-ingest:1".into()));
        let other = with_worker(|w| w.image = Some("evil/miner:latest".into()));
        assert!(broken(&none, &own).is_empty());
        assert_eq!(broken(&none, &other), ["images"]);
        let r = rules(r#"{"images": ["myacr.azurecr.io/vfxt-ingest:*"]}"#);
        let acr = with_worker(|w| w.image = Some("myacr.azurecr.io/vfxt-ingest:2.1".into()));
        assert!(broken(&r, &acr).is_empty());
        assert_eq!(broken(&r, &other), ["images"]);
        // A job that names no image runs the operator's, whatever the list says.
        assert!(broken(&r, &spec()).is_empty());
    }

    #[test]
    fn service_accounts_are_refused_unless_allowed() {
        let s = with_worker(|w| w.service_account_name = Some("cluster-admin-ish".into()));
        assert_eq!(
            broken(&NamespaceRules::default(), &s),
            ["allowServiceAccount"]
        );
        assert!(broken(&rules(r#"{"allowServiceAccount": true}"#), &s).is_empty());
    }

    #[test]
    fn root_is_the_default_uid_and_refused_when_not_allowed() {
        let r = rules(r#"{"allowRoot": false}"#);
        assert_eq!(broken(&r, &spec()), ["allowRoot"]);
        let explicit = with_worker(|w| {
            w.security_context = Some(WorkerSecurity {
                run_as_user: Some(0),
                ..Default::default()
            })
        });
        assert_eq!(broken(&r, &explicit), ["allowRoot"]);
        let user = with_worker(|w| {
            w.security_context = Some(WorkerSecurity {
                run_as_user: Some(1000),
                ..Default::default()
            })
        });
        assert!(broken(&r, &user).is_empty());
        // The operator's defaults (the chart's worker.securityContext) count when the job sets none.
        let v = r.check(
            &spec(),
            &OperatorDefaults {
                image: "x".into(),
                uid: 1000,
            },
        );
        assert!(v.is_empty());
    }

    #[test]
    fn workers_and_threads_are_capped() {
        let r = rules(r#"{"maxWorkers": 2, "maxThreadsPerWorker": 32}"#);
        assert!(
            broken(&r, &spec()).is_empty(),
            "2 servers: 2 workers by default"
        );
        let mut s = spec();
        s.workers = Some(3);
        s.threads_per_worker = ThreadsPerWorker::Fixed(64);
        assert_eq!(broken(&r, &s), ["maxWorkers", "maxThreadsPerWorker"]);
        s.workers = None;
        s.destination.nfs.servers.push("10.1.1.103".into());
        s.threads_per_worker = ThreadsPerWorker::Auto;
        let v = r.check(&s, &defaults());
        assert!(
            v[0].message.contains("one per destination server"),
            "{}",
            v[0]
        );
        assert!(v[1].message.contains("auto"), "{}", v[1]);
    }

    #[test]
    fn a_namespace_entry_replaces_the_default_whole() {
        let p = AdmissionPolicy::from_json(
            r#"{"default": {"allowRoot": false}, "namespaces": {"research": {"servers": ["10.0.0.0/8"]}}}"#,
        )
        .unwrap();
        assert_eq!(broken(p.rules("other"), &spec()), ["allowRoot"]);
        assert!(broken(p.rules("research"), &spec()).is_empty());
    }

    #[test]
    fn a_bad_policy_is_refused_naming_the_field() {
        let e = AdmissionPolicy::from_json(r#"{"default": {"allowroot": false}}"#).unwrap_err();
        assert!(e.contains("allowroot"), "{e}");
        let e =
            AdmissionPolicy::from_json(r#"{"namespaces": {"a": {"servers": ["10.0.0.0/33"]}}}"#)
                .unwrap_err();
        assert!(e.starts_with("namespaces.a.servers"), "{e}");
        let e =
            AdmissionPolicy::from_json(r#"{"default": {"exportPaths": ["export"]}}"#).unwrap_err();
        assert!(e.contains("exportPaths"), "{e}");
        assert_eq!(
            AdmissionPolicy::from_json(" ").unwrap(),
            AdmissionPolicy::default()
        );
    }
}
