//! Container environment and downward-API values, resolved the way the kubelet does.
//!
//! Everything here is pure: the ConfigMaps and Secrets a pod refers to are
//! fetched first (see `volumes::fetch_sources`) and handed in as [`Sources`].

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod};

/// ConfigMap and Secret contents by name, in the pod's namespace. A name that
/// is absent was not found (fine only where the reference is optional).
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Sources {
    /// The value of `key` in ConfigMap (`secret == false`) or Secret `name`;
    /// `Ok(None)` when the reference is optional and the object or key is missing.
    pub fn lookup(
        &self,
        secret: bool,
        name: &str,
        key: &str,
        optional: bool,
    ) -> Result<Option<&[u8]>, String> {
        let kind = if secret { "secret" } else { "configmap" };
        let objects = if secret {
            &self.secrets
        } else {
            &self.config_maps
        };
        match objects.get(name).map(|data| data.get(key)) {
            Some(Some(v)) => Ok(Some(v)),
            _ if optional => Ok(None),
            None => Err(format!("{kind} \"{name}\" not found")),
            Some(None) => Err(format!("{kind} \"{name}\" has no key \"{key}\"")),
        }
    }
}

/// The value of a downward-API `fieldRef` (`metadata.name`,
/// `metadata.annotations['batch.kubernetes.io/job-completion-index']`, `status.podIP`, ...).
pub fn field_value(pod: &Pod, sel: &ObjectFieldSelector) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let path = sel.field_path.as_str();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.annotations", meta.annotations.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.labels", meta.labels.as_ref()) {
        return Ok(v);
    }
    let v = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status.and_then(|s| {
            s.pod_ips.as_ref().map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        }),
        _ => {
            return Err(format!(
                "fieldRef '{path}' is not supported (valid: metadata.name, metadata.namespace, \
                 metadata.uid, metadata.labels['K'], metadata.annotations['K'], spec.nodeName, \
                 spec.serviceAccountName, status.podIP, status.podIPs, status.hostIP)"
            ));
        }
    };
    Ok(v.unwrap_or_default())
}

/// Expands `$(NAME)` from `vars` as the kubelet does: `$$` is a literal `$`,
/// and a reference to an undefined name stays as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(v) = vars.get(&body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment: `base` (PATH, HOSTNAME, the API server's
/// service variables), then `envFrom`, then `env`, each later one overriding
/// and able to refer to earlier ones with `$(NAME)`.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    base: Vec<(String, String)>,
) -> Result<HashMap<String, String>, String> {
    let mut vars: HashMap<String, String> = base.into_iter().collect();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (secret, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(c), _) => (false, c.name.as_str(), c.optional.unwrap_or(false)),
            (None, Some(s)) => (true, s.name.as_str(), s.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        let objects = if secret {
            &sources.secrets
        } else {
            &sources.config_maps
        };
        match objects.get(name) {
            Some(data) => {
                for (k, v) in data {
                    vars.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => {
                let kind = if secret { "secret" } else { "configmap" };
                return Err(format!("envFrom: {kind} \"{name}\" not found"));
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &vars))
        } else if let Some(vf) = &e.value_from {
            let ctx = |m: String| format!("env {}: {m}", e.name);
            if let Some(f) = &vf.field_ref {
                Some(field_value(pod, f).map_err(ctx)?)
            } else if let Some(c) = &vf.config_map_key_ref {
                sources
                    .lookup(false, &c.name, &c.key, c.optional.unwrap_or(false))
                    .map_err(ctx)?
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            } else if let Some(s) = &vf.secret_key_ref {
                sources
                    .lookup(true, &s.name, &s.key, s.optional.unwrap_or(false))
                    .map_err(ctx)?
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            } else {
                return Err(ctx(
                    "only value, fieldRef, configMapKeyRef and secretKeyRef are supported".into(),
                ));
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            vars.insert(e.name.clone(), v);
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "job-0-abc", "namespace": "ns1", "uid": "u1",
                "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
                "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c",
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                            {"secretRef": {"name": "absent", "optional": true}}],
                "env": [
                    {"name": "IDX", "valueFrom": {"fieldRef": {"fieldPath":
                        "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef":
                        {"name": "cm", "key": "nokey", "optional": true}}},
                    {"name": "MSG", "value": "index $(IDX) in $(NS), $$(IDX) $(UNDEF)"}
                ]}]},
            "status": {"podIP": "127.0.0.1"}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.config_maps
            .insert("cm".into(), [("a".to_string(), b"1".to_vec())].into());
        s.secrets
            .insert("s".into(), [("pw".to_string(), b"hunter2".to_vec())].into());
        s
    }

    #[test]
    fn env_resolves_downward_api_refs_and_expansion() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = container_env(&p, c, &sources(), vec![("HOSTNAME".into(), "h".into())]).unwrap();
        assert_eq!(env["IDX"], "2");
        assert_eq!(env["NS"], "ns1");
        assert_eq!(env["IP"], "127.0.0.1");
        assert_eq!(env["PW"], "hunter2");
        assert_eq!(env["CM_a"], "1");
        assert_eq!(env["HOSTNAME"], "h");
        assert!(!env.contains_key("OPT"));
        assert_eq!(env["MSG"], "index 2 in ns1, $(IDX) $(UNDEF)");
    }

    #[test]
    fn missing_required_reference_names_the_variable_and_object() {
        let p = pod();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let mut s = sources();
        s.secrets.clear();
        let err = container_env(&p, c, &s, vec![]).unwrap_err();
        assert_eq!(err, "env PW: secret \"s\" not found");
    }

    #[test]
    fn unsupported_field_path_lists_valid_ones() {
        let sel = ObjectFieldSelector {
            field_path: "spec.bogus".into(),
            api_version: None,
        };
        let err = field_value(&pod(), &sel).unwrap_err();
        assert!(
            err.contains("spec.bogus") && err.contains("metadata.annotations['K']"),
            "{err}"
        );
    }
}
