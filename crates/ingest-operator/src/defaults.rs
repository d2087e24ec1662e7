//! Operator-wide worker defaults (`--worker-defaults`, the chart's `worker:` values) merged under each
//! IngestJob's `spec.worker` (pure).
//!
//! The rule: field by field at the top level of [`WorkerTemplate`], the IngestJob's value wins when it is set,
//! otherwise the default is used. A set field is taken whole: `nodeSelector`, `tolerations`, `resources` and
//! `securityContext` are never combined key by key or concatenated, so an IngestJob that sets
//! `nodeSelector: {}` or `tolerations: []` runs with none, whatever the defaults say. Combining would make it
//! impossible for a job to leave the default node pool (a selector can only be narrowed by adding keys), and
//! a toleration list that grows from two sources is hard to reason about. `labels` and `annotations` are
//! the exception: they add up key by key, the job's value winning for a key both set, so that an install's
//! labels (cost allocation, policy selectors) stay on every pod whatever a job adds.

use std::collections::BTreeMap;

use ingest_api::job::WorkerTemplate;

/// `spec` over `defaults`: each top-level field from `spec` when set, else from `defaults`.
pub fn merge_worker(spec: &WorkerTemplate, defaults: &WorkerTemplate) -> WorkerTemplate {
    // Destructured so that a field added to WorkerTemplate fails to compile here until it is merged too.
    let WorkerTemplate {
        image,
        image_pull_policy,
        resources,
        node_selector,
        tolerations,
        service_account_name,
        security_context,
        image_pull_secrets,
        priority_class_name,
        affinity,
        topology_spread_constraints,
        labels,
        annotations,
    } = spec;
    // Labels and annotations add up, the job's winning over the install's defaults.
    let merged = |own: &Option<BTreeMap<String, String>>,
                  base: &Option<BTreeMap<String, String>>| {
        match (own, base) {
            (None, None) => None,
            _ => Some(
                base.iter()
                    .chain(own.iter())
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    };
    WorkerTemplate {
        image: image.clone().or_else(|| defaults.image.clone()),
        image_pull_policy: image_pull_policy.or(defaults.image_pull_policy),
        resources: resources.clone().or_else(|| defaults.resources.clone()),
        node_selector: node_selector
            .clone()
            .or_else(|| defaults.node_selector.clone()),
        tolerations: tolerations.clone().or_else(|| defaults.tolerations.clone()),
        service_account_name: service_account_name
            .clone()
            .or_else(|| defaults.service_account_name.clone()),
        security_context: security_context
            .clone()
            .or_else(|| defaults.security_context.clone()),
        image_pull_secrets: image_pull_secrets
            .clone()
            .or_else(|| defaults.image_pull_secrets.clone()),
        priority_class_name: priority_class_name
            .clone()
            .or_else(|| defaults.priority_class_name.clone()),
        affinity: affinity.clone().or_else(|| defaults.affinity.clone()),
        topology_spread_constraints: topology_spread_constraints
            .clone()
            .or_else(|| defaults.topology_spread_constraints.clone()),
        labels: merged(labels, &defaults.labels),
        annotations: merged(annotations, &defaults.annotations),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_api::job::{PullPolicy, WorkerSecurity};
    use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn toleration(key: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }
    }

    fn selector(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_owned(), v.to_owned())])
    }

    fn cpu(n: &str) -> ResourceRequirements {
        ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity(n.into()))])),
            ..Default::default()
        }
    }

    fn full_defaults() -> WorkerTemplate {
        WorkerTemplate {
            image: Some("registry.example/ingest:defaults".into()),
            image_pull_policy: Some(PullPolicy::Always),
            resources: Some(cpu("4")),
            node_selector: Some(selector("agentpool", "ingest")),
            tolerations: Some(vec![toleration("workload")]),
            service_account_name: Some("shared-ingest".into()),
            security_context: Some(WorkerSecurity {
                run_as_user: Some(1000),
                ..Default::default()
            }),
            image_pull_secrets: Some(vec![Default::default()]),
            priority_class_name: Some("low".into()),
            affinity: Some(Default::default()),
            topology_spread_constraints: Some(Vec::new()),
            labels: Some(selector("cost-center", "it")),
            annotations: Some(selector("note", "install")),
        }
    }

    #[test]
    fn empty_defaults_leave_the_spec_as_it_is() {
        let spec = WorkerTemplate {
            image: Some("mine".into()),
            node_selector: Some(selector("zone", "a")),
            ..Default::default()
        };
        assert_eq!(merge_worker(&spec, &WorkerTemplate::default()), spec);
        assert_eq!(
            merge_worker(&WorkerTemplate::default(), &WorkerTemplate::default()),
            WorkerTemplate::default()
        );
    }

    #[test]
    fn defaults_fill_every_field_the_spec_leaves_unset() {
        assert_eq!(
            merge_worker(&WorkerTemplate::default(), &full_defaults()),
            full_defaults()
        );
    }

    #[test]
    fn spec_wins_field_by_field() {
        let spec = WorkerTemplate {
            image: Some("mine".into()),
            resources: Some(cpu("2")),
            ..Default::default()
        };
        let m = merge_worker(&spec, &full_defaults());
        assert_eq!(m.image.as_deref(), Some("mine"));
        assert_eq!(m.resources, Some(cpu("2")));
        // Fields the spec leaves unset still come from the defaults.
        assert_eq!(m.image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(m.node_selector, Some(selector("agentpool", "ingest")));
        assert_eq!(m.tolerations, Some(vec![toleration("workload")]));
        assert_eq!(m.service_account_name.as_deref(), Some("shared-ingest"));
        assert_eq!(m.security_context.unwrap().run_as_user, Some(1000));
    }

    #[test]
    fn node_selector_and_tolerations_are_replaced_not_combined() {
        let spec = WorkerTemplate {
            node_selector: Some(selector("zone", "b")),
            tolerations: Some(vec![toleration("gpu")]),
            ..Default::default()
        };
        let m = merge_worker(&spec, &full_defaults());
        assert_eq!(
            m.node_selector,
            Some(selector("zone", "b")),
            "no agentpool key"
        );
        assert_eq!(m.tolerations, Some(vec![toleration("gpu")]), "no workload");

        // Explicitly empty: the job opts out of the default pool and its taints.
        let opt_out = WorkerTemplate {
            node_selector: Some(BTreeMap::new()),
            tolerations: Some(Vec::new()),
            ..Default::default()
        };
        let m = merge_worker(&opt_out, &full_defaults());
        assert_eq!(m.node_selector, Some(BTreeMap::new()));
        assert_eq!(m.tolerations, Some(Vec::new()));
    }

    #[test]
    fn resources_and_security_context_are_taken_whole() {
        let spec = WorkerTemplate {
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("8Gi".into()))])),
                ..Default::default()
            }),
            security_context: Some(WorkerSecurity {
                run_as_group: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = merge_worker(&spec, &full_defaults());
        let r = m.resources.unwrap();
        assert!(
            r.requests.is_none(),
            "the default cpu request is not mixed in: {r:?}"
        );
        let sc = m.security_context.unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_group), (None, Some(5)));
    }

    #[test]
    fn labels_and_annotations_add_up_key_by_key_the_jobs_winning() {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let defaults = WorkerTemplate {
            labels: map(&[("cost-center", "it"), ("tier", "batch")]),
            priority_class_name: Some("low".into()),
            ..WorkerTemplate::default()
        };
        let spec = WorkerTemplate {
            labels: map(&[("cost-center", "render")]),
            annotations: map(&[("note", "x")]),
            ..WorkerTemplate::default()
        };
        let m = merge_worker(&spec, &defaults);
        assert_eq!(
            m.labels,
            map(&[("cost-center", "render"), ("tier", "batch")])
        );
        assert_eq!(m.annotations, map(&[("note", "x")]));
        assert_eq!(m.priority_class_name.as_deref(), Some("low"));
        let none = merge_worker(&WorkerTemplate::default(), &WorkerTemplate::default());
        assert_eq!((none.labels, none.annotations), (None, None));
    }
}
