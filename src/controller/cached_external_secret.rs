//! The ExternalSecret cache, kept compact: each object serialized, expanded only while it is
//! reconciled.
//!
//! A deserialized `ExternalSecret` is about 2.9 KB on the heap even for a one-key spec: an
//! 800-byte struct, a 540-byte `BTreeMap` node for its labels however few, a `String` per
//! field of the spec, status and `Ready` condition, and an `ObjectRef` key carrying the
//! resourceVersion and uid strings. 10,000 of them were about 30 MiB, the largest part of the
//! operator's memory. Yet at any time at most `--concurrency` of them are being reconciled;
//! the others are only looked up by name (a trigger), by store (a store's change requeues the
//! ExternalSecrets that use it) and by `Ready` status (the metrics). [`CachedExternalSecret`]
//! keeps exactly those as fields and the rest of the object as its JSON, from which
//! [`CachedExternalSecret::expand`] makes the whole `ExternalSecret` again for a reconcile.
//!
//! That JSON is kept LZ4-compressed (an LZ4 block, `lz4_flex`) against a dictionary: the JSON
//! of a typical ExternalSecret ([`DICTIONARY`]), so that the field names and common values every
//! object repeats cost a few bytes each. A one-key ExternalSecret's 834 bytes of JSON become
//! 240 (unit test below); compressing takes about 1 µs, expanding well under 1 µs.
//!
//! The name and namespace are kept as one `namespace/name` string, shared with the key of the
//! cache ([`super::external_secret_cache`]), not as an `ObjectMeta`: kube's reflector store
//! needed one (its `Resource` trait), 360 bytes per object with only two fields set, plus an
//! `ObjectRef` key of 96 bytes and two strings, about 500 bytes per ExternalSecret in all
//! (50 MB at N = 100,000).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};

use crate::api::{
    ExternalSecret, ExternalSecretSpec, ExternalSecretStatus, external_secret::StoreKind,
};

/// One ExternalSecret as the cache keeps it (module docs), about 80 bytes besides its
/// compressed JSON and its `namespace/name` string.
#[derive(Clone, Debug)]
pub struct CachedExternalSecret {
    /// `namespace/name` ([`super::object_key`]), the cache's key and the trigger gate's.
    key: Arc<str>,
    /// `spec.secretStoreRef.kind`.
    pub store_kind: StoreKind,
    /// `spec.secretStoreRef.name`.
    pub store_name: Box<str>,
    /// The `status` of its `Ready` condition: `Some(true)` for `True`, `Some(false)` for
    /// `False`, `None` when absent or `Unknown`.
    pub ready: Option<bool>,
    /// `status.generators[].notAfter`: per generator whose values hold a certificate, its
    /// name and the certificate's notAfter (Unix seconds); `None` for most (8 bytes).
    pub certificates: Option<Box<Certificates>>,
    /// The rest of the object (its other metadata, spec and status) as JSON, compressed (an
    /// LZ4 block against [`DICTIONARY`], its uncompressed size prepended).
    rest: Box<[u8]>,
}

/// Per generator whose values hold a certificate: its name and the certificate's notAfter
/// (Unix seconds).
pub type Certificates = Vec<(Box<str>, i64)>;

/// What [`CachedExternalSecret::rest`] holds.
#[derive(Serialize, Deserialize)]
struct Rest {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: ExternalSecretSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<ExternalSecretStatus>,
}

impl CachedExternalSecret {
    /// Projects a watched ExternalSecret. Its `managedFields` and kubectl's last-applied
    /// annotation are expected gone already (`strip`).
    pub fn project(es: ExternalSecret) -> Self {
        let ExternalSecret {
            mut metadata,
            spec,
            status,
            ..
        } = es;
        let key: Arc<str> = super::object_key(
            metadata.namespace.take().as_deref().unwrap_or_default(),
            &metadata.name.take().unwrap_or_default(),
        )
        .into();
        let ready = status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| match c.status.as_str() {
                "True" => Some(true),
                "False" => Some(false),
                _ => None,
            });
        let certificates: Certificates = status
            .iter()
            .flat_map(|s| &s.generators)
            .filter_map(|g| Some((g.name.as_str().into(), g.not_after.as_ref()?.0.as_second())))
            .collect();
        let certificates = (!certificates.is_empty()).then(|| Box::new(certificates));
        let (store_kind, store_name) = (
            spec.secret_store_ref.kind,
            spec.secret_store_ref.name.as_str().into(),
        );
        let json = serde_json::to_vec(&Rest {
            metadata,
            spec,
            status,
        })
        .expect("an ExternalSecret serializes to JSON");
        let rest = lz4_flex::block::compress_prepend_size_with_dict(&json, DICTIONARY);
        Self {
            key,
            store_kind,
            store_name,
            ready,
            certificates,
            rest: rest.into_boxed_slice(),
        }
    }

    /// Projects every object of a watch event, each behind an `Arc` for the cache to share.
    pub fn project_event(event: watcher::Event<ExternalSecret>) -> watcher::Event<Arc<Self>> {
        let project = |es| Arc::new(Self::project(es));
        match event {
            watcher::Event::Apply(es) => watcher::Event::Apply(project(es)),
            watcher::Event::Delete(es) => watcher::Event::Delete(project(es)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(es) => watcher::Event::InitApply(project(es)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        }
    }

    /// The whole ExternalSecret again, as it was watched (less what `strip` dropped).
    pub fn expand(&self) -> ExternalSecret {
        let Rest {
            mut metadata,
            spec,
            status,
        } = lz4_flex::block::decompress_size_prepended_with_dict(&self.rest, DICTIONARY)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .expect("a cached ExternalSecret expands as it was compressed");
        metadata.name = Some(self.name().to_string());
        metadata.namespace = Some(self.namespace().to_string());
        ExternalSecret {
            metadata,
            spec,
            status,
        }
    }

    /// Whether it names the store `kind`/`name` (of its namespace when `namespace` is given).
    pub fn uses_store(&self, kind: StoreKind, namespace: Option<&str>, name: &str) -> bool {
        self.store_kind == kind
            && *self.store_name == *name
            && namespace.is_none_or(|ns| ns == self.namespace())
    }

    /// Its `namespace/name` ([`super::object_key`]): the cache's key.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Its `metadata.namespace`.
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map_or("", |(ns, _)| ns)
    }

    /// Its `metadata.name`.
    pub fn name(&self) -> &str {
        self.key
            .split_once('/')
            .map_or(&*self.key, |(_, name)| name)
    }
}

/// What most cached ExternalSecrets resemble, as [`Rest`] serializes: every field name in its
/// order and the common values (policies, strategies, the `Ready` condition of a sync). Only
/// compression ratios depend on it; changing it is safe (the cache is rebuilt at each start).
pub const DICTIONARY: &[u8] = br#"{"metadata":{"annotations":{"secret-relay.dev/force-sync":""},"creationTimestamp":"2026-01-01T00:00:00Z","finalizers":[],"generation":1,"labels":{"app.kubernetes.io/name":""},"resourceVersion":"1","uid":"00000000-0000-0000-0000-000000000000"},"spec":{"refreshInterval":"1h","secretStoreRef":{"name":"","kind":"SecretStore"},"target":{"name":"","creationPolicy":"Owner","deletionPolicy":"Retain","immutable":false,"template":{}},"data":[{"secretKey":"","remoteRef":{"key":"","property":"","decodingStrategy":"None","conversionStrategy":"Default"}}],"dataFrom":[]},"status":{"conditions":[{"lastTransitionTime":"2026-01-01T00:00:00Z","message":"Secret was synced","observedGeneration":1,"reason":"SecretSynced","status":"True","type":"Ready"}],"observedGeneration":1,"refreshTime":"2026-01-01T00:00:00Z","syncedResourceVersion":"1-0000000000000000","binding":{"name":""}}}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn external_secret(status: serde_json::Value) -> ExternalSecret {
        serde_json::from_value(json!({
            "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {
                "name": "app", "namespace": "team-a", "uid": "uid-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-01T00:00:00Z",
                "labels": {"team": "a"}, "annotations": {"secret-relay.dev/force-sync": "1"},
                "finalizers": ["x/y"],
            },
            "spec": {
                "refreshInterval": "10m",
                "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "target": {"name": "app-secret", "template": {"data": {"u": "{{ .user }}"}}},
                "data": [{"secretKey": "user", "remoteRef": {"key": "db", "property": "user"}}],
                "dataFrom": [{"extract": {"key": "common"}}],
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn expand_gives_back_the_whole_external_secret() {
        for status in [
            json!(null),
            json!({"conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                "message": "Secret was synced", "lastTransitionTime": "2026-12-01T00:00:10Z"}],
                "refreshTime": "2026-12-01T00:00:10Z", "syncedResourceVersion": "3-abc",
                "binding": {"name": "app-secret"}}),
        ] {
            let es = external_secret(status);
            let cached = CachedExternalSecret::project(es.clone());
            assert_eq!(
                serde_json::to_value(cached.expand()).unwrap(),
                serde_json::to_value(&es).unwrap()
            );
        }
    }

    #[test]
    fn the_cache_key_is_only_namespace_and_name() {
        let cached = CachedExternalSecret::project(external_secret(json!(null)));
        assert_eq!(&**cached.key(), "team-a/app");
        assert_eq!((cached.namespace(), cached.name()), ("team-a", "app"));
    }

    #[test]
    fn store_and_ready_are_kept_as_fields() {
        let cached = CachedExternalSecret::project(external_secret(json!(null)));
        assert_eq!(cached.ready, None);
        assert!(cached.uses_store(StoreKind::ClusterSecretStore, None, "vault"));
        assert!(cached.uses_store(StoreKind::ClusterSecretStore, Some("team-a"), "vault"));
        assert!(!cached.uses_store(StoreKind::ClusterSecretStore, Some("team-b"), "vault"));
        assert!(!cached.uses_store(StoreKind::SecretStore, None, "vault"));
        assert!(!cached.uses_store(StoreKind::ClusterSecretStore, None, "vaul"));
        for (status, ready) in [
            ("True", Some(true)),
            ("False", Some(false)),
            ("Unknown", None),
        ] {
            let es = external_secret(json!({"conditions": [{"type": "Ready", "status": status,
                "reason": "R", "message": "", "lastTransitionTime": "2026-12-01T00:00:10Z"}]}));
            assert_eq!(CachedExternalSecret::project(es).ready, ready, "{status}");
        }
    }

    #[test]
    fn a_typical_external_secret_is_kept_in_about_a_quarter_of_its_json() {
        let es: ExternalSecret = serde_json::from_value(json!({
            "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": "es-00001", "namespace": "ns-001",
                "labels": {"secret-relay.dev/bench-run": "run-1764633600"},
                "uid": "0b6f1a7e-3a2c-4f7e-9a55-1f6d2c9f8e11", "resourceVersion": "1234567",
                "generation": 1, "creationTimestamp": "2026-12-02T00:00:00Z"},
            "spec": {"refreshInterval": "600s",
                "secretStoreRef": {"name": "ssm-store", "kind": "SecretStore"},
                "data": [{"secretKey": "value", "remoteRef": {"key": "/bench/run/key-0001"}}]},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "reason": "SecretSynced", "message": "Secret was synced",
                "lastTransitionTime": "2026-12-02T00:00:10Z", "observedGeneration": 1}],
                "observedGeneration": 1, "refreshTime": "2026-12-02T00:00:10Z",
                "syncedResourceVersion": "1-0f3c2b1a9d8e7f6a", "binding": {"name": "es-00001"}}
        }))
        .unwrap();
        let json = serde_json::to_vec(&Rest {
            metadata: ObjectMeta {
                name: None,
                namespace: None,
                ..es.metadata.clone()
            },
            spec: es.spec.clone(),
            status: es.status.clone(),
        })
        .unwrap();
        let cached = CachedExternalSecret::project(es);
        assert_eq!(json.len(), 834);
        assert!(cached.rest.len() <= 250, "{} bytes", cached.rest.len());
    }
}
