//! The cache of the Secrets we manage, projected to what a reconcile reads of them.
//!
//! The Secrets labelled `app.kubernetes.io/managed-by: secret-relay` are watched metadata-only,
//! one per ExternalSecret. Kept as `PartialObjectMeta<Secret>`, each held its labels and
//! annotations in two `BTreeMap`s (a 540-byte node each, however few entries), its owner
//! references and uid: about 1.5 KB per Secret, 15 MiB at 10,000. A reconcile only asks of
//! them: does the Secret exist, at which resourceVersion, since when, for which ExternalSecret,
//! does it carry our data hash, and does it carry every label, annotation and owner we would
//! write. [`ManagedSecret`] keeps exactly that: the resourceVersion and creationTimestamp, the
//! ExternalSecret's name, and one keyed 64-bit hash per label, annotation and owner uid.
//!
//! [`SecretCache`] holds them by `namespace/name`, filled from the watch's events. It is not a
//! kube reflector `Store`: that needs a `Resource`, whose `ObjectMeta` alone is 360 bytes
//! however little of it is set (heaptrack: 4.1 MB of 7 MB at 10,000 Secrets).

use std::{
    collections::{BTreeMap, HashMap},
    hash::BuildHasher,
    sync::{
        LazyLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp,
};
use kube::{core::PartialObjectMeta, runtime::watcher};
use tokio::sync::Notify;

use crate::api::{ANNOTATION_DATA_HASH, ANNOTATION_LAST_REFRESH, LABEL_EXTERNAL_SECRET};

/// One managed Secret as the cache keeps it.
#[derive(Clone, Debug)]
pub struct ManagedSecret {
    /// Its `metadata.resourceVersion`.
    pub resource_version: Box<str>,
    /// Its `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// The value of its `secret-relay.dev/external-secret` label: the ExternalSecret of its
    /// namespace it was written for.
    pub external_secret: Option<Box<str>>,
    /// Whether it carries the `secret-relay.dev/data-hash` annotation (our writes do).
    pub has_data_hash: bool,
    /// [`Fingerprint`] of its labels, annotations and owners.
    fingerprint: Fingerprint,
    /// The cache's relist this entry was last applied in ([`SecretCache::apply`]).
    epoch: u32,
}

impl ManagedSecret {
    /// Projects a watched Secret's metadata (its labels, annotations and owners are reduced to
    /// their hashes).
    pub fn project(meta: &ObjectMeta) -> Self {
        Self {
            fingerprint: Fingerprint::of(meta),
            external_secret: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EXTERNAL_SECRET))
                .map(|name| name.as_str().into()),
            has_data_hash: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_DATA_HASH)),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            epoch: 0,
        }
    }

    /// Whether this Secret carries every label, annotation and owner of `desired`
    /// ([`Fingerprint::covers`]).
    pub fn carries(&self, desired: &ObjectMeta) -> bool {
        self.fingerprint.covers(desired)
    }
}

/// The managed Secrets by `namespace/name`, filled by [`SecretCache::apply`] from the events
/// of their watch, as a kube reflector would, but for a relist (`Init` … `InitDone`, after a
/// 410 Gone or an API server restart): it updates the entries in place and drops, when done,
/// those it did not list again. A kube reflector builds the relisted map aside and swaps it
/// in, holding every Secret twice meanwhile (about 24 MB more at 100,000).
#[derive(Default)]
pub struct SecretCache {
    inner: RwLock<Maps>,
    ready: AtomicBool,
    listed: Notify,
}

#[derive(Default)]
struct Maps {
    secrets: HashMap<Box<str>, ManagedSecret>,
    /// The current relist's number: the entries applied since its `Init` carry it.
    epoch: u32,
}

fn key_of(meta: &ObjectMeta) -> Box<str> {
    super::object_key(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

impl SecretCache {
    /// Applies one event of the watch of managed Secrets.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut maps = self.inner.write().expect("secret cache lock");
        let epoch = maps.epoch;
        match event {
            watcher::Event::Init => maps.epoch = epoch.wrapping_add(1),
            watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
                let mut secret = ManagedSecret::project(&s.metadata);
                secret.epoch = epoch;
                maps.secrets.insert(key_of(&s.metadata), secret);
            }
            watcher::Event::InitDone => {
                maps.secrets.retain(|_, s| s.epoch == epoch);
                drop(maps);
                self.ready.store(true, Ordering::Release);
                self.listed.notify_waiters();
            }
            watcher::Event::Delete(s) => {
                maps.secrets.remove(&key_of(&s.metadata));
            }
        }
    }

    /// Runs `f` on the cached Secret `namespace/name`, if there is one.
    pub fn read<T>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&ManagedSecret) -> T,
    ) -> Option<T> {
        let maps = self.inner.read().expect("secret cache lock");
        maps.secrets.get(&super::object_key(namespace, name)).map(f)
    }

    /// Whether the cache holds the Secret `namespace/name`.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.read(namespace, name, |_| ()).is_some()
    }

    /// Number of cached Secrets.
    pub fn len(&self) -> usize {
        self.inner.read().expect("secret cache lock").secrets.len()
    }

    /// Whether no Secret is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list is in.
    pub async fn wait_until_ready(&self) {
        loop {
            let listed = self.listed.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            listed.await;
        }
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
        m.resource_version = Some("42".into());
        let s = ManagedSecret::project(&m);
        assert_eq!(s.external_secret.as_deref(), Some("app"));
        assert!(s.has_data_hash);
        assert!(s.carries(&m));
        assert_eq!(&*s.resource_version, "42");
    }

    fn event(name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_cache_follows_the_watch_and_a_relist_drops_the_unlisted_when_done() {
        use watcher::Event::*;
        let cache = SecretCache::default();
        let rv = |name| cache.read("team", name, |s| s.resource_version.to_string());
        for e in [
            Init,
            InitApply(event("a", "1")),
            InitApply(event("b", "1")),
            InitDone,
        ] {
            cache.apply(&e);
        }
        cache.wait_until_ready().await;
        assert_eq!(
            (rv("a").as_deref(), rv("b").as_deref()),
            (Some("1"), Some("1"))
        );
        cache.apply(&Apply(event("a", "2")));
        cache.apply(&Delete(event("b", "1")));
        assert_eq!((rv("a").as_deref(), rv("b")), (Some("2"), None));
        assert!(!cache.contains("other", "a"));
        // A relist in progress updates in place what it lists and keeps the rest until it is
        // done.
        cache.apply(&Apply(event("b", "3")));
        cache.apply(&Init);
        cache.apply(&InitApply(event("c", "5")));
        cache.apply(&InitApply(event("b", "4")));
        assert_eq!(
            (rv("a").as_deref(), rv("b").as_deref(), rv("c").as_deref()),
            (Some("2"), Some("4"), Some("5"))
        );
        cache.apply(&InitDone);
        assert_eq!(
            (rv("a"), rv("b").as_deref(), rv("c").as_deref()),
            (None, Some("4"), Some("5"))
        );
        assert_eq!(cache.len(), 2);
    }
}
