//! The cache of the Secrets we manage, projected to what a reconcile reads of them.
//!
//! The Secrets labelled `app.kubernetes.io/managed-by: secret-relay` are watched metadata-only,
//! one per ExternalSecret. Kept as `PartialObjectMeta<Secret>`, each held its labels and
//! annotations in two `BTreeMap`s (a 540-byte node each, however few entries), its owner
//! references and uid: about 1.5 KB per Secret, 15 MiB at 10,000. A reconcile only asks of
//! them: does the Secret exist, at which resourceVersion, since when, for which ExternalSecret,
//! does it carry our data hash, and does it carry every label, annotation and owner we would
//! write. [`ManagedSecret`] keeps exactly that: the name, namespace, resourceVersion and
//! creationTimestamp, the ExternalSecret's name, and one keyed 64-bit hash per label,
//! annotation and owner uid.

use std::{borrow::Cow, collections::BTreeMap, hash::BuildHasher, sync::LazyLock};

use k8s_openapi::{
    NamespaceResourceScope, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, core::PartialObjectMeta, runtime::watcher};

use crate::api::{ANNOTATION_DATA_HASH, ANNOTATION_LAST_REFRESH, LABEL_EXTERNAL_SECRET};

/// One managed Secret as the cache keeps it. It deserializes from a Secret's metadata
/// (`PartialObjectMeta<Secret>`, projected).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(from = "PartialObjectMeta<Secret>")]
pub struct ManagedSecret {
    /// Only `name`, `namespace`, `resourceVersion` and `creationTimestamp`.
    metadata: ObjectMeta,
    /// The value of its `secret-relay.dev/external-secret` label: the ExternalSecret of its
    /// namespace it was written for.
    pub external_secret: Option<String>,
    /// Whether it carries the `secret-relay.dev/data-hash` annotation (our writes do).
    pub has_data_hash: bool,
    /// [`Fingerprint`] of its labels, annotations and owners.
    fingerprint: Fingerprint,
}

impl ManagedSecret {
    /// Projects a watched Secret's metadata (its labels, annotations and owners are reduced to
    /// their hashes).
    pub fn project(secret: PartialObjectMeta<Secret>) -> Self {
        let meta = secret.metadata;
        Self {
            fingerprint: Fingerprint::of(&meta),
            external_secret: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EXTERNAL_SECRET).cloned()),
            has_data_hash: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_DATA_HASH)),
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                resource_version: meta.resource_version,
                creation_timestamp: meta.creation_timestamp,
                ..Default::default()
            },
        }
    }

    /// Projects every object of a watch event.
    pub fn project_event(
        event: watcher::Event<PartialObjectMeta<Secret>>,
    ) -> watcher::Event<ManagedSecret> {
        match event {
            watcher::Event::Apply(s) => watcher::Event::Apply(Self::project(s)),
            watcher::Event::Delete(s) => watcher::Event::Delete(Self::project(s)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(s) => watcher::Event::InitApply(Self::project(s)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        }
    }

    /// Whether this Secret carries every label, annotation and owner of `desired`
    /// ([`Fingerprint::covers`]).
    pub fn carries(&self, desired: &ObjectMeta) -> bool {
        self.fingerprint.covers(desired)
    }
}

impl From<PartialObjectMeta<Secret>> for ManagedSecret {
    fn from(secret: PartialObjectMeta<Secret>) -> Self {
        Self::project(secret)
    }
}

impl Resource for ManagedSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The labels, annotations and owner uids of an object as a sorted set of 64-bit SipHash
/// values, keyed per process (std's `RandomState`), so no tenant can choose a label that
/// collides with another.
///
/// The rule it answers ([`Fingerprint::covers`]) is the one by which an existing Secret is up
/// to date with the metadata we would write: every desired label and annotation is present
/// with its value (our `secret-relay.dev/last-refresh` annotation aside: it changes with every
/// write), and every desired owner's uid is among the owners. Labels, annotations and owners
/// others add do not matter.
#[derive(Clone, Debug, Default)]
pub struct Fingerprint(Box<[u64]>);

static KEYS: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);

const LABEL: u8 = 0;
const ANNOTATION: u8 = 1;
const OWNER: u8 = 2;

impl Fingerprint {
    /// The fingerprint of `meta`'s labels, annotations and owners.
    pub fn of(meta: &ObjectMeta) -> Self {
        let mut hashes: Vec<u64> = entries(meta).collect();
        hashes.sort_unstable();
        hashes.dedup();
        Self(hashes.into_boxed_slice())
    }

    /// Whether the object fingerprinted carries every label, annotation (but
    /// `secret-relay.dev/last-refresh`) and owner uid of `desired`.
    pub fn covers(&self, desired: &ObjectMeta) -> bool {
        entries(desired).all(|h| self.0.binary_search(&h).is_ok())
    }
}

/// The hash of each label, annotation (but `secret-relay.dev/last-refresh`) and owner uid of
/// `meta`.
fn entries(meta: &ObjectMeta) -> impl Iterator<Item = u64> + '_ {
    pairs(LABEL, &meta.labels)
        .chain(pairs(ANNOTATION, &meta.annotations))
        .chain(
            meta.owner_references
                .iter()
                .flatten()
                .map(|o| KEYS.hash_one((OWNER, o.uid.as_str()))),
        )
}

/// The hash of each entry of a label or annotation map, our last-refresh annotation aside.
fn pairs(kind: u8, map: &Option<BTreeMap<String, String>>) -> impl Iterator<Item = u64> + '_ {
    map.iter()
        .flatten()
        .filter(|(k, _)| *k != ANNOTATION_LAST_REFRESH)
        .map(move |(k, v)| KEYS.hash_one((kind, k.as_str(), v.as_str())))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)], owners: &[&str]) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            owner_references: Some(
                owners
                    .iter()
                    .map(|uid| OwnerReference {
                        uid: uid.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn covers_what_we_would_write_and_ignores_what_others_add() {
        let have = Fingerprint::of(&meta(
            &[("a", "1"), ("b", "2"), ("theirs", "x")],
            &[("h", "abc"), (ANNOTATION_LAST_REFRESH, "t1")],
            &["uid-1", "uid-other"],
        ));
        assert!(have.covers(&meta(&[("a", "1")], &[("h", "abc")], &["uid-1"])));
        // Our last-refresh annotation changes with every write: it is not compared.
        assert!(have.covers(&meta(&[], &[(ANNOTATION_LAST_REFRESH, "t2")], &[])));
        assert!(have.covers(&ObjectMeta::default()));
    }

    #[test]
    fn a_changed_missing_or_moved_entry_is_not_covered() {
        let have = Fingerprint::of(&meta(&[("a", "1")], &[("h", "abc")], &["uid-1"]));
        assert!(
            !have.covers(&meta(&[("a", "2")], &[], &[])),
            "changed value"
        );
        assert!(
            !have.covers(&meta(&[("c", "1")], &[], &[])),
            "missing label"
        );
        assert!(
            !have.covers(&meta(&[], &[("h", "abd")], &[])),
            "changed hash"
        );
        assert!(!have.covers(&meta(&[], &[], &["uid-2"])), "other owner");
        // A label is not an annotation of the same name and value.
        assert!(!have.covers(&meta(&[], &[("a", "1")], &[])));
        assert!(!have.covers(&meta(&[("h", "abc")], &[], &[])));
    }

    #[test]
    fn a_projection_keeps_only_what_a_reconcile_reads() {
        let mut m = meta(
            &[(LABEL_EXTERNAL_SECRET, "app"), ("a", "1")],
            &[(ANNOTATION_DATA_HASH, "abc")],
            &["uid-1"],
        );
        m.name = Some("app".into());
        m.namespace = Some("team".into());
        m.resource_version = Some("42".into());
        m.uid = Some("secret-uid".into());
        let s = ManagedSecret::project(PartialObjectMeta {
            types: None,
            metadata: m.clone(),
            _phantom: Default::default(),
        });
        assert_eq!(s.external_secret.as_deref(), Some("app"));
        assert!(s.has_data_hash);
        assert!(s.carries(&m));
        let kept = s.meta();
        assert_eq!(
            (kept.name.as_deref(), kept.namespace.as_deref()),
            (Some("app"), Some("team"))
        );
        assert_eq!(kept.resource_version.as_deref(), Some("42"));
        assert!(kept.labels.is_none() && kept.annotations.is_none());
        assert!(kept.owner_references.is_none() && kept.uid.is_none());
    }
}
