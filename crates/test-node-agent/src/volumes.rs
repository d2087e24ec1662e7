//! Pod volumes as local directories: ConfigMap/Secret/downward-API/projected
//! contents written as files into the pod dir, NFS exports (inline or through a
//! PVC bound to an NFS PV) mapped by `--nfs-map`, emptyDir and hostPath as dirs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
    ServiceAccountTokenProjection, Volume,
};
use kube::api::{Api, PostParams};

use crate::config::{NfsMap, resolve_nfs};
use crate::env::{Sources, field_value};

/// A volume ready to be bind-mounted: its local directory and whether the
/// volume source itself is read-only (a mount may still ask for read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolume {
    pub dir: PathBuf,
    pub read_only: bool,
}

/// Fetches every ConfigMap and Secret the pod names (env, envFrom, volumes).
/// Missing objects are left out; whether that is an error depends on the
/// reference's `optional`, which is judged where it is used.
pub async fn fetch_sources(client: &kube::Client, pod: &Pod) -> Result<Sources, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced_objects(pod);
    let mut sources = Sources::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        if let Some(cm) = cm_api
            .get_opt(&name)
            .await
            .map_err(|e| format!("get configmap {name}: {e}"))?
        {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            sources.config_maps.insert(name, data);
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        if let Some(s) = secret_api
            .get_opt(&name)
            .await
            .map_err(|e| format!("get secret {name}: {e}"))?
        {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            data.extend(
                s.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// Names of the ConfigMaps and Secrets a pod refers to.
fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for f in c.env_from.iter().flatten() {
            cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten() {
            let Some(vf) = &e.value_from else { continue };
            cms.extend(vf.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(vf.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    for v in spec.volumes.iter().flatten() {
        cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            cms.extend(p.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(p.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    (cms, secrets)
}

/// Materialises every volume of the pod under `pod_dir/volumes/<name>`
/// (or maps it to its NFS/hostPath directory), by volume name.
pub async fn materialise(
    client: &kube::Client,
    nfs_maps: &[NfsMap],
    pod: &Pod,
    sources: &Sources,
    pod_dir: &Path,
) -> Result<HashMap<String, LocalVolume>, String> {
    let mut out = HashMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    for v in spec.volumes.iter().flatten() {
        let lv = materialise_one(client, nfs_maps, pod, sources, pod_dir, v)
            .await
            .map_err(|e| format!("volume \"{}\": {e}", v.name))?;
        out.insert(v.name.clone(), lv);
    }
    Ok(out)
}

async fn materialise_one(
    client: &kube::Client,
    nfs_maps: &[NfsMap],
    pod: &Pod,
    sources: &Sources,
    pod_dir: &Path,
    v: &Volume,
) -> Result<LocalVolume, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let own = pod_dir.join("volumes").join(&v.name);
    let writable = |dir: PathBuf| LocalVolume {
        dir,
        read_only: false,
    };
    let fresh = || -> Result<(), String> {
        // Written once per pod start: clear leftovers of an earlier start.
        let _ = std::fs::remove_dir_all(&own);
        std::fs::create_dir_all(&own).map_err(|e| format!("create {}: {e}", own.display()))
    };
    if v.empty_dir.is_some() {
        // 0777, as the kubelet makes an emptyDir: the pod may run as any uid.
        std::fs::create_dir_all(&own)
            .and_then(|()| std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)))
            .map_err(|e| format!("create {}: {e}", own.display()))?;
        return Ok(writable(own));
    }
    if let Some(h) = &v.host_path {
        let dir = PathBuf::from(&h.path);
        if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        return Ok(writable(dir));
    }
    if let Some(n) = &v.nfs {
        let dir = nfs_dir(nfs_maps, &n.server, &n.path)?;
        return Ok(LocalVolume {
            dir,
            read_only: n.read_only.unwrap_or(false),
        });
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let dir = pvc_dir(client, nfs_maps, ns, &claim.claim_name).await?;
        return Ok(LocalVolume {
            dir,
            read_only: claim.read_only.unwrap_or(false),
        });
    }
    let ro = |dir: PathBuf| LocalVolume {
        dir,
        read_only: true,
    };
    if let Some(c) = &v.config_map {
        fresh()?;
        write_keyed(
            sources,
            false,
            &c.name,
            c.items.as_deref(),
            c.optional,
            c.default_mode,
            &own,
        )?;
        return Ok(ro(own));
    }
    if let Some(s) = &v.secret {
        fresh()?;
        let name = s
            .secret_name
            .as_deref()
            .ok_or("secret.secretName is required")?;
        write_keyed(
            sources,
            true,
            name,
            s.items.as_deref(),
            s.optional,
            s.default_mode,
            &own,
        )?;
        return Ok(ro(own));
    }
    if let Some(d) = &v.downward_api {
        fresh()?;
        for item in d.items.iter().flatten() {
            let value = downward_item(pod, item)?;
            write_file(
                &own,
                &item.path,
                value.as_bytes(),
                item.mode.or(d.default_mode),
            )?;
        }
        return Ok(ro(own));
    }
    if let Some(p) = &v.projected {
        fresh()?;
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                write_keyed(
                    sources,
                    false,
                    &c.name,
                    c.items.as_deref(),
                    c.optional,
                    p.default_mode,
                    &own,
                )?;
            } else if let Some(s) = &src.secret {
                write_keyed(
                    sources,
                    true,
                    &s.name,
                    s.items.as_deref(),
                    s.optional,
                    p.default_mode,
                    &own,
                )?;
            } else if let Some(d) = &src.downward_api {
                for item in d.items.iter().flatten() {
                    let value = downward_item(pod, item)?;
                    write_file(
                        &own,
                        &item.path,
                        value.as_bytes(),
                        item.mode.or(p.default_mode),
                    )?;
                }
            } else if let Some(t) = &src.service_account_token {
                let token =
                    request_token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
                write_file(&own, &t.path, token.as_bytes(), p.default_mode)?;
            } else {
                return Err(
                    "projected: only configMap, secret, downwardAPI and serviceAccountToken \
                            sources are supported"
                        .into(),
                );
            }
        }
        return Ok(ro(own));
    }
    Err("unsupported volume type (supported: emptyDir, hostPath, nfs, persistentVolumeClaim with an \
         nfs/hostPath/local PV, configMap, secret, downwardAPI, projected)"
        .into())
}

/// The projected service-account token sources of a pod: (volume, source).
fn token_sources(pod: &Pod) -> impl Iterator<Item = (&Volume, &ServiceAccountTokenProjection)> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .flat_map(|v| {
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(move |src| src.service_account_token.as_ref().map(|t| (v, t)))
        })
}

/// How often to refresh the pod's tokens: at 80% of the shortest requested
/// lifetime, as the kubelet does; `None` when the pod has no token volume.
pub fn token_refresh_interval(pod: &Pod) -> Option<Duration> {
    token_sources(pod)
        .map(|(_, t)| t.expiration_seconds.unwrap_or(3600).max(600) as u64 * 8 / 10)
        .min()
        .map(Duration::from_secs)
}

/// Requests fresh tokens and rewrites the token files in place (the volume
/// dir is bind-mounted into running containers, so it must stay the same dir).
pub async fn refresh_tokens(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<(), String> {
    for (v, t) in token_sources(pod) {
        let token = request_token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
        let mode = v.projected.as_ref().and_then(|p| p.default_mode);
        write_file(
            &pod_dir.join("volumes").join(&v.name),
            &t.path,
            token.as_bytes(),
            mode,
        )?;
    }
    Ok(())
}

fn nfs_dir(maps: &[NfsMap], server: &str, path: &str) -> Result<PathBuf, String> {
    let dir = resolve_nfs(maps, server, path).ok_or_else(|| {
        let known: Vec<String> = maps
            .iter()
            .map(|m| format!("{}:{}", m.server, m.export))
            .collect();
        format!(
            "nfs {server}:{path} is not mapped to a local directory (give the agent \
             --nfs-map {server}:{path}=/local/dir; mapped: [{}])",
            known.join(", ")
        )
    })?;
    if !dir.is_dir() {
        return Err(format!(
            "nfs {server}:{path} maps to {}, which is not a directory (a real NFS mount \
             would fail the same way for a missing export path)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// A PVC's directory: through its bound PV's nfs (mapped), hostPath or local source.
async fn pvc_dir(
    client: &kube::Client,
    nfs_maps: &[NfsMap],
    ns: &str,
    claim: &str,
) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| format!("get pvc {claim}: {e}"))?
        .ok_or_else(|| format!("persistentVolumeClaim \"{claim}\" not found"))?;
    let pv_name = pvc.spec.and_then(|s| s.volume_name).ok_or_else(|| {
        format!(
            "persistentVolumeClaim \"{claim}\" is not bound to a volume (spec.volumeName is empty)"
        )
    })?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .map_err(|e| format!("get pv {pv_name}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(n) = spec.nfs {
        nfs_dir(nfs_maps, &n.server, &n.path)
    } else if let Some(h) = spec.host_path {
        Ok(PathBuf::from(h.path))
    } else if let Some(l) = spec.local {
        Ok(PathBuf::from(l.path))
    } else {
        Err(format!(
            "persistentVolume \"{pv_name}\" has no nfs, hostPath or local source"
        ))
    }
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            // No audience means the API server's own, as for the kubelet.
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: expiration,
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token request for serviceaccount {ns}/{sa}: {e}"))?;
    resp.status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("token request for serviceaccount {ns}/{sa} returned no token"))
}

fn downward_item(
    pod: &Pod,
    item: &k8s_openapi::api::core::v1::DownwardAPIVolumeFile,
) -> Result<String, String> {
    let f = item
        .field_ref
        .as_ref()
        .ok_or_else(|| format!("downwardAPI item {}: only fieldRef is supported", item.path))?;
    field_value(pod, f)
}

/// Writes a ConfigMap's or Secret's keys (all, or the listed `items`) as files.
fn write_keyed(
    sources: &Sources,
    secret: bool,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    default_mode: Option<i32>,
    dir: &Path,
) -> Result<(), String> {
    let optional = optional.unwrap_or(false);
    let objects = if secret {
        &sources.secrets
    } else {
        &sources.config_maps
    };
    let Some(data) = objects.get(name) else {
        let kind = if secret { "secret" } else { "configmap" };
        return if optional {
            Ok(())
        } else {
            Err(format!("{kind} \"{name}\" not found"))
        };
    };
    match items {
        None => {
            for (k, v) in data {
                write_file(dir, k, v, default_mode)?;
            }
        }
        Some(items) => {
            for it in items {
                if let Some(v) = sources.lookup(secret, name, &it.key, optional)? {
                    write_file(dir, &it.path, v, it.mode.or(default_mode))?;
                }
            }
        }
    }
    Ok(())
}

/// Writes `dir/rel`, refusing paths that would leave `dir`.
fn write_file(dir: &Path, rel: &str, data: &[u8], mode: Option<i32>) -> Result<(), String> {
    let relp = Path::new(rel);
    if rel.is_empty()
        || relp
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("path \"{rel}\" must be relative without '..'"));
    }
    let path = dir.join(relp);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    }
    std::fs::write(&path, data).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o777;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn referenced_objects_cover_env_and_volumes() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s1"}}]}],
                "containers": [{"name": "c", "env": [{"name": "X", "valueFrom":
                    {"configMapKeyRef": {"name": "cm1", "key": "k"}}}]}],
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm2"}},
                    {"name": "b", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}},
                                                           {"secret": {"name": "s2"}}]}}
                ]}
        }))
        .unwrap();
        let (cms, secrets) = referenced_objects(&pod);
        assert_eq!(
            cms.into_iter().collect::<Vec<_>>(),
            ["cm1", "cm2", "kube-root-ca.crt"]
        );
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["s1", "s2"]);
    }

    #[test]
    fn keyed_files_honour_items_modes_and_optional() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sources::default();
        s.config_maps.insert(
            "cm".into(),
            [
                ("a".to_string(), b"A".to_vec()),
                ("b".to_string(), b"B".to_vec()),
            ]
            .into(),
        );
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o600),
        }];
        write_keyed(&s, false, "cm", Some(&items), None, None, dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/b.txt")).unwrap(), b"B");
        let mode = std::fs::metadata(dir.path().join("sub/b.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("a").exists());
        write_keyed(&s, true, "nope", None, Some(true), None, dir.path()).unwrap();
        let err = write_keyed(&s, true, "nope", None, None, None, dir.path()).unwrap_err();
        assert_eq!(err, "secret \"nope\" not found");
        let err = write_file(dir.path(), "../x", b"", None).unwrap_err();
        assert!(err.contains("without '..'"), "{err}");
    }

    #[test]
    fn tokens_refresh_at_80_percent_of_the_shortest_lifetime() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
                {"name": "b", "projected": {"sources": [{"serviceAccountToken": {"path": "t2", "expirationSeconds": 1000}}]}},
                {"name": "c", "emptyDir": {}}
            ]}
        }))
        .unwrap();
        assert_eq!(token_refresh_interval(&pod), Some(Duration::from_secs(800)));
        let none: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .unwrap();
        assert_eq!(token_refresh_interval(&none), None);
    }

    #[test]
    fn unmapped_nfs_names_the_flag_to_give() {
        let err = nfs_dir(&[], "10.1.1.101", "/nfs").unwrap_err();
        assert!(
            err.contains("--nfs-map 10.1.1.101:/nfs=/local/dir"),
            "{err}"
        );
    }
}
