//! Unknown fields in a hand-written `IngestJob` (`vfxt-ingest run -f`), found against the CRD's own
//! generated schema, at every depth.
//!
//! The API server prunes or (with strict field validation) rejects a field its schema does not
//! know; a local file has no API server, and serde ignores unknown fields of the nested types. The
//! check walks the document with the schema (`properties`, `additionalProperties` maps, `items`,
//! `x-kubernetes-preserve-unknown-fields`), so the CRD stays the one source of truth: nothing is
//! listed twice, and a field added to the types is known here at once. The types are not made
//! `deny_unknown_fields`: the operator reads objects written by other versions of the CRD, and
//! k8s-openapi's types (resources, tolerations) cannot be changed anyway.
//!
//! It runs as a serde `DeserializeSeed`, so the error carries the YAML line and column.

use std::cell::RefCell;
use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The CRD's schema of the whole object: `spec` and `status` as generated, plus `apiVersion`,
/// `kind` and `metadata`, which every object has (the API server checks `metadata` itself; here
/// it is not looked into).
pub fn object_schema() -> JSONSchemaProps {
    let mut schema = crate::crd()
        .spec
        .versions
        .into_iter()
        .next()
        .and_then(|v| v.schema)
        .and_then(|s| s.open_api_v3_schema)
        .expect("the generated CRD has a schema");
    let props = schema.properties.get_or_insert_with(Default::default);
    for (name, kind) in [
        ("apiVersion", "string"),
        ("kind", "string"),
        ("metadata", "object"),
    ] {
        props.entry(name.into()).or_insert_with(|| JSONSchemaProps {
            type_: Some(kind.into()),
            ..JSONSchemaProps::default()
        });
    }
    schema
}

/// Reads any value, failing at the first field `schema` does not know, with a message that names
/// its path and the valid names: `spec.verify.mod: unknown field; expected one of mode`.
#[derive(Clone, Copy)]
pub struct Strict<'a> {
    pub schema: &'a JSONSchemaProps,
    /// The path of the value read (`spec.verify`); empty at the top.
    pub path: &'a str,
    /// The message of the unknown field found (the error returned says only where).
    pub found: &'a RefCell<Option<String>>,
}

impl<'a> Strict<'a> {
    pub fn new(schema: &'a JSONSchemaProps, found: &'a RefCell<Option<String>>) -> Self {
        Strict {
            schema,
            path: "",
            found,
        }
    }

    fn preserves(&self) -> bool {
        self.schema.x_kubernetes_preserve_unknown_fields == Some(true)
    }

    fn join(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.preserves() {
            d.deserialize_ignored_any(IgnoredAny).map(drop)
        } else {
            d.deserialize_any(self)
        }
    }
}

/// Reads a map key (YAML keys can be numbers or booleans too) and looks it up in the schema: an
/// unknown one fails here, so the error's position is the key's.
struct KeySeed<'s, 'a>(&'s Strict<'a>);

/// What a key's value is read with: a schema, or nothing to check.
type ValueSchema<'a> = Option<&'a JSONSchemaProps>;

impl<'a> Strict<'a> {
    fn lookup<E: de::Error>(&self, key: &str) -> Result<(String, ValueSchema<'a>), E> {
        let path = self.join(key);
        let schema: &'a JSONSchemaProps = self.schema;
        let known = schema.properties.as_ref().and_then(|p| p.get(key));
        match (known, &schema.additional_properties) {
            (Some(s), _) => Ok((path, Some(s))),
            (None, Some(JSONSchemaPropsOrBool::Schema(s))) => Ok((path, Some(&**s))),
            (None, Some(JSONSchemaPropsOrBool::Bool(true))) => Ok((path, None)),
            (None, _) => match &schema.properties {
                Some(props) => {
                    let names: Vec<&str> = props.keys().map(String::as_str).collect();
                    let msg = format!(
                        "{path}: unknown field; expected one of {}",
                        names.join(", ")
                    );
                    *self.found.borrow_mut() = Some(msg.clone());
                    Err(E::custom(msg))
                }
                // An object without a schema for its fields (`metadata`): not ours to judge.
                None => Ok((path, None)),
            },
        }
    }
}

impl<'de, 'a> DeserializeSeed<'de> for KeySeed<'_, 'a> {
    type Value = (String, ValueSchema<'a>);

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a> Visitor<'_> for KeySeed<'_, 'a> {
    type Value = (String, ValueSchema<'a>);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.lookup(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.lookup(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.lookup(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.lookup(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.lookup(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.lookup("null")
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((path, schema)) = map.next_key_seed(KeySeed(&self))? {
            match schema {
                Some(schema) => map.next_value_seed(Strict {
                    schema,
                    path: &path,
                    found: self.found,
                })?,
                None => map.next_value::<IgnoredAny>().map(drop)?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let items = match &self.schema.items {
            Some(JSONSchemaPropsOrArray::Schema(s)) => Some(&**s),
            _ => None,
        };
        let mut i = 0;
        loop {
            let more = match items {
                Some(schema) => {
                    let path = format!("{}[{i}]", self.path);
                    seq.next_element_seed(Strict {
                        schema,
                        path: &path,
                        found: self.found,
                    })?
                    .is_some()
                }
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A YAML tag (`!Foo x`): the typed pass says what is wrong with it.
        let (IgnoredAny, v) = data.variant()?;
        de::VariantAccess::newtype_variant::<IgnoredAny>(v).map(drop)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Checks a YAML `IngestJob` for fields the CRD does not know; the message names the path, the
/// valid names and the line.
pub fn check_yaml(text: &str, schema: &JSONSchemaProps) -> Result<(), String> {
    let found = RefCell::new(None);
    Strict::new(schema, &found)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            // serde_yaml puts its own path and position around the message; ours has both.
            let msg = found.take().unwrap_or_else(|| {
                let msg = e.to_string();
                match msg.find(" at line ") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                }
            });
            format!("{msg}{at}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: x, labels: {a: b}, anything: goes}
spec:
  source: {nfs: {server: 10.0.0.5, path: /export}, subPath: a}
  destination: {nfs: {servers: [10.0.1.1], path: /nfs, mountOptions: [hard]}, subPath: b}
  workers: 2
  threadsPerWorker: auto
  shards: {target: 4, maxFiles: 10, maxBytes: 10}
  verify: {mode: Checksum}
  preserve: {owner: true, mode: true, times: true, xattrs: false, symlinks: true, hardlinks: true}
  failurePolicy: {action: Continue, maxFailedFiles: 3, retriesPerShard: 1}
  run: 1
  worker:
    image: x
    imagePullPolicy: Always
    resources: {limits: {cpu: '2', memory: 1Gi}, requests: {cpu: 1}}
    nodeSelector: {any-label: any-value}
    tolerations: [{key: k, operator: Exists, effect: NoSchedule}]
    serviceAccountName: sa
    securityContext: {runAsUser: 0, runAsGroup: 0, supplementalGroups: [1]}
";

    #[test]
    fn a_valid_object_with_every_field_passes() {
        assert_eq!(check_yaml(VALID, &object_schema()), Ok(()));
    }

    #[test]
    fn a_typo_at_any_depth_is_named_with_the_valid_names_and_line() {
        let schema = object_schema();
        for (from, to, says) in [
            (
                "verify: {mode:",
                "verify: {mod:",
                "spec.verify.mod: unknown field; expected one of fsync, mode, repair, scope (line 10",
            ),
            (
                "{owner: true",
                "{ownr: true",
                "spec.preserve.ownr: unknown field; expected one of acls, hardlinks, mode, owner, symlinks, times, xattrs",
            ),
            (
                "{action: Continue",
                "{actoin: Continue",
                "spec.failurePolicy.actoin: unknown field; expected one of action, maxFailedFiles, retriesPerShard",
            ),
            (
                "    image: x",
                "    imag: x",
                "spec.worker.imag: unknown field; expected one of affinity, annotations, image, imagePullPolicy, imagePullSecrets, labels, nodeSelector, priorityClassName, resources, securityContext, serviceAccountName, tolerations, topologySpreadConstraints (line 15",
            ),
            (
                "{target: 4",
                "{targte: 4",
                "spec.shards.targte: unknown field; expected one of maxBytes, maxFiles, target",
            ),
            (
                "{nfs: {server:",
                "{nfs: {sever:",
                "spec.source.nfs.sever: unknown field; expected one of path, server",
            ),
            (
                "{nfs: {servers:",
                "{nfs: {server:",
                "spec.destination.nfs.server: unknown field; expected one of mountOptions, path, servers",
            ),
            (
                ", subPath: a}",
                ", subpath: a}",
                "spec.source.subpath: unknown field; expected one of nfs, pvc, subPath",
            ),
            (
                ", subPath: b}",
                ", sub_path: b}",
                "spec.destination.sub_path: unknown field; expected one of nfs, subPath",
            ),
            (
                "{runAsUser:",
                "{runAs:",
                "spec.worker.securityContext.runAs: unknown field",
            ),
            (
                "{limits:",
                "{limit:",
                "spec.worker.resources.limit: unknown field; expected one of claims, limits, requests",
            ),
            (
                "operator: Exists",
                "operater: Exists",
                "spec.worker.tolerations[0].operater: unknown field",
            ),
            (
                "  workers: 2",
                "  wrokers: 2",
                "spec.wrokers: unknown field; expected one of destination, dryRun, failurePolicy, filter, limits, maxDeletes, mode, preserve, report, run, shards, source, stallTimeoutSeconds, suspend, threadsPerWorker, verify, worker, workers (line 7",
            ),
        ] {
            assert!(VALID.contains(from), "{from}");
            let e = check_yaml(&VALID.replacen(from, to, 1), &schema).unwrap_err();
            assert!(e.contains(says), "{to}: {e}");
        }
    }
}
