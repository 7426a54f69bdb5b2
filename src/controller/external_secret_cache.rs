//! The cache of this shard's ExternalSecrets, filled by their watch and read by the runner
//! ([`super::runner`]), the triggers and the metrics.
//!
//! kube's reflector store kept each object under an `ObjectRef` key (96 bytes and two
//! strings) and required an `ObjectMeta` in it (360 bytes): about 500 bytes per ExternalSecret
//! that no reconcile reads. [`ExternalSecretCache`] keys each [`CachedExternalSecret`] by its own
//! `namespace/name` string instead, shared by the object and its entry.
//!
//! A relist (the watch's `Init` .. `InitDone`, after a 410 Gone or a restart of the watch)
//! updates the entries in place and drops, at `InitDone`, the ones it did not list again.
//! kube's store built the whole relisted map beside the old one and swapped them, so a relist
//! briefly held every ExternalSecret twice. Until `InitDone` the entries not yet relisted are
//! served as they were, as kube's store serves its old map.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use kube::runtime::watcher;

use super::CachedExternalSecret;

/// An entry: the object and the relist it was last seen in.
type Entry = (Arc<CachedExternalSecret>, u32);

/// The ExternalSecrets by `namespace/name` (module docs).
pub struct ExternalSecretCache {
    objects: RwLock<Objects>,
    ready: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct Objects {
    map: HashMap<Arc<str>, Entry>,
    /// The current relist's number: entries applied since its `Init` carry it.
    epoch: u32,
}

impl Default for ExternalSecretCache {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            ready: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl ExternalSecretCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.objects.read().expect("ExternalSecret cache lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects.write().expect("ExternalSecret cache lock")
    }

    /// The cached ExternalSecret `namespace/name`, if any.
    pub fn get(&self, key: &str) -> Option<Arc<CachedExternalSecret>> {
        self.read().map.get(key).map(|(es, _)| es.clone())
    }

    /// The cache's own key string for `namespace/name`, if cached: to share rather than copy
    /// (the refresh timers keep it).
    pub fn shared_key(&self, key: &str) -> Option<Arc<str>> {
        self.read()
            .map
            .get_key_value(key)
            .map(|(key, _)| key.clone())
    }

    /// Calls `f` with every cached ExternalSecret, under the cache's read lock (`f` must not
    /// touch the cache).
    pub fn for_each(&self, mut f: impl FnMut(&CachedExternalSecret)) {
        for (es, _) in self.read().map.values() {
            f(es);
        }
    }

    /// Applies one event of the ExternalSecret watch, as kube's reflector would: `Apply` and
    /// `InitApply` insert or replace, `Delete` removes, `InitDone` removes what the relist
    /// did not list and marks the cache ready (the first time).
    pub fn apply(&self, event: &watcher::Event<Arc<CachedExternalSecret>>) {
        let mut objects = self.write();
        let epoch = objects.epoch;
        match event {
            watcher::Event::Apply(es) | watcher::Event::InitApply(es) => {
                objects.map.insert(es.key().clone(), (es.clone(), epoch));
            }
            watcher::Event::Delete(es) => {
                objects.map.remove(&**es.key());
            }
            watcher::Event::Init => objects.epoch = epoch.wrapping_add(1),
            watcher::Event::InitDone => {
                objects.map.retain(|_, (_, seen)| *seen == epoch);
                drop(objects);
                self.ready.send_replace(true);
            }
        }
    }

    /// Resolves once the watch's first list is complete (`InitDone`).
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use serde_json::json;

    use super::*;
    use crate::api::ExternalSecret;

    fn es(name: &str, store: &str) -> Arc<CachedExternalSecret> {
        let es: ExternalSecret = serde_json::from_value(json!({
            "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"secretStoreRef": {"name": store, "kind": "SecretStore"}},
        }))
        .unwrap();
        Arc::new(CachedExternalSecret::project(es))
    }

    fn names(cache: &ExternalSecretCache) -> Vec<String> {
        let mut names = Vec::new();
        cache.for_each(|es| names.push(format!("{}:{}", es.key(), es.store_name)));
        names.sort();
        names
    }

    #[test]
    fn ready_only_after_the_first_list() {
        let cache = ExternalSecretCache::default();
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(es("a", "s1")));
        assert!(cache.wait_until_ready().now_or_never().is_none());
        cache.apply(&watcher::Event::InitDone);
        assert!(cache.wait_until_ready().now_or_never().is_some());
        assert_eq!(names(&cache), ["team-a/a:s1"]);
    }

    #[test]
    fn watch_events_insert_replace_and_remove() {
        let cache = ExternalSecretCache::default();
        cache.apply(&watcher::Event::Apply(es("a", "s1")));
        cache.apply(&watcher::Event::Apply(es("b", "s1")));
        cache.apply(&watcher::Event::Apply(es("a", "s2")));
        assert_eq!(names(&cache), ["team-a/a:s2", "team-a/b:s1"]);
        cache.apply(&watcher::Event::Delete(es("b", "s1")));
        assert_eq!(names(&cache), ["team-a/a:s2"]);
        assert_eq!(cache.get("team-a/a").unwrap().store_name.as_ref(), "s2");
        assert!(cache.get("team-a/b").is_none());
    }

    #[test]
    fn a_relist_serves_the_old_entries_until_done_then_drops_the_unlisted() {
        let cache = ExternalSecretCache::default();
        for name in ["a", "b", "c"] {
            cache.apply(&watcher::Event::Apply(es(name, "s1")));
        }
        cache.apply(&watcher::Event::Init);
        cache.apply(&watcher::Event::InitApply(es("a", "s2")));
        cache.apply(&watcher::Event::InitApply(es("d", "s2")));
        // Not relisted yet: still served.
        assert_eq!(
            names(&cache),
            ["team-a/a:s2", "team-a/b:s1", "team-a/c:s1", "team-a/d:s2"]
        );
        cache.apply(&watcher::Event::InitApply(es("c", "s1")));
        cache.apply(&watcher::Event::InitDone);
        assert_eq!(names(&cache), ["team-a/a:s2", "team-a/c:s1", "team-a/d:s2"]);
        assert_eq!(names(&cache).len(), 3);
    }
}
