//! The Node object and its heartbeats (node status + Lease), so the node
//! lifecycle controller keeps it Ready and does not evict its pods.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;

const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the node advertises.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

impl Capacity {
    /// This machine's cores and memory; `pods` from the flag.
    pub fn of_host(pods: u32) -> Self {
        let cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(4 * 1024 * 1024);
        Capacity {
            cpu: cpu.to_string(),
            memory: format!("{mem_kib}Ki"),
            pods,
        }
    }
}

fn node_status(cap: &Capacity, now: Timestamp) -> NodeStatus {
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", cap.cpu.clone()),
        ("memory", cap.memory.clone()),
        ("pods", cap.pods.to_string()),
        ("ephemeral-storage", "100Gi".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: "127.0.0.1".into(),
        }]),
        conditions: Some(vec![
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "test-node-agent is posting ready status",
            ),
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no pressure",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no pressure",
            ),
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            os_image: "test-node-agent (pods run as local processes)".into(),
            kernel_version: String::new(),
            container_runtime_version: "agent://0".into(),
            kubelet_version: concat!("test-node-agent/", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node (or adopts an existing one of that name) and posts its
/// status and Lease once, so it is Ready before the first pod is bound.
pub async fn register(client: &kube::Client, name: &str, cap: &Capacity) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    ("kubernetes.io/hostname", name),
                    ("kubernetes.io/os", "linux"),
                    ("kubernetes.io/arch", std::env::consts::ARCH),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = name, "node exists; adopting it")
        }
        Err(e) => return Err(Error::Kube("create node", e)),
    }
    heartbeat(client, name, cap).await
}

/// One heartbeat: node status (Ready, fresh lastHeartbeatTime) and the Lease.
pub async fn heartbeat(client: &kube::Client, name: &str, cap: &Capacity) -> Result<(), Error> {
    let now = Timestamp::now();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": node_status(cap, now) })),
        )
        .await
        .map_err(|e| Error::Kube("patch node status", e))?;
    let uid = nodes
        .get(name)
        .await
        .map_err(|e| Error::Kube("get node", e))?
        .metadata
        .uid;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            // Owned by the Node like the kubelet's, so deleting the node drops it.
            owner_references: uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    };
    let pp = PatchParams::apply("test-node-agent").force();
    leases
        .patch(name, &pp, &Patch::Apply(&lease))
        .await
        .map_err(|e| Error::Kube("apply node lease", e))?;
    Ok(())
}

/// Heartbeats forever; failures are logged and retried at the next beat (an
/// API server restart should not kill the node).
pub async fn heartbeat_loop(client: kube::Client, name: String, cap: Capacity) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        if let Err(e) = heartbeat(&client, &name, &cap).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_ready_with_capacity() {
        let cap = Capacity {
            cpu: "2".into(),
            memory: "1Gi".into(),
            pods: 110,
        };
        let st = node_status(&cap, Timestamp::UNIX_EPOCH);
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(st.allocatable.unwrap()["pods"], Quantity("110".into()));
        assert!(Capacity::of_host(5).memory.ends_with("Ki"));
    }
}
