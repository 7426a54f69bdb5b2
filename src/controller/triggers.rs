//! What reconciles an ExternalSecret: a change of it, of its managed Secret or of the store it
//! names, and its refresh timer. [`external_secret_triggers`] merges them into one stream of
//! ExternalSecrets (`namespace/name`) for the trigger gate ([`super::trigger_gate`]).

use std::{
    collections::HashMap,
    num::NonZeroI64,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::{ResourceExt, core::PartialObjectMeta, runtime::watcher};

use super::{Context, external_secret_cache::ExternalSecretCache, object_key};
use crate::api::{
    ClusterSecretStore, LABEL_EXTERNAL_SECRET, SecretStore, external_secret::StoreKind,
};

/// A store as the ExternalSecret watch sees it: kind, namespace (None for cluster stores), name.
type StoreId = (StoreKind, Option<String>, String);

/// The ExternalSecrets to reconcile, from:
/// - `external_secrets`: the ExternalSecret watch (the key of each object applied to the
///   cache);
/// - the refresh timers that fire, unless the ExternalSecret was deleted or its timer was set
///   again since;
/// - `stores` and `cluster_stores`: a store's change requeues every ExternalSecret that names
///   it (see [`requeue_by_store`]);
/// - `secrets`: a managed Secret's change reconciles the ExternalSecret its label names.
///
/// Watch errors are dropped here: the watches count them (`observe_api`) and back off.
pub(super) fn external_secret_triggers(
    ctx: &Arc<Context>,
    es_cache: &Arc<ExternalSecretCache>,
    external_secrets: impl Stream<Item = Result<Arc<str>, watcher::Error>> + Send + 'static,
    stores: impl Stream<Item = Result<SecretStore, watcher::Error>> + Send + 'static,
    cluster_stores: impl Stream<Item = Result<ClusterSecretStore, watcher::Error>> + Send + 'static,
    secrets: impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Arc<str>> + Send + 'static {
    let refreshes = ctx.refresh_timers.clone().fired({
        let ctx = ctx.clone();
        move |es, due_ms| {
            let mut state = ctx.state.lock().expect("state lock");
            match state.get_mut(es) {
                Some(o) if o.refresh_timer.map(NonZeroI64::get) == Some(due_ms) => {
                    o.refresh_timer = None;
                    true
                }
                _ => false,
            }
        }
    });
    let by_store = requeue_by_store(ctx, es_cache);
    let by_cluster_store = by_store.clone();
    futures::stream::select_all([
        external_secrets
            .filter_map(|key| future::ready(key.ok()))
            .boxed(),
        refreshes.boxed(),
        stores
            .filter_map(|s| future::ready(s.ok()))
            .flat_map(move |s| {
                futures::stream::iter(by_store(
                    StoreKind::SecretStore,
                    s.namespace(),
                    s.name_any(),
                    s.metadata.generation,
                ))
            })
            .boxed(),
        cluster_stores
            .filter_map(|s| future::ready(s.ok()))
            .flat_map(move |s| {
                futures::stream::iter(by_cluster_store(
                    StoreKind::ClusterSecretStore,
                    None,
                    s.name_any(),
                    s.metadata.generation,
                ))
            })
            .boxed(),
        secrets
            .filter_map(|s| {
                future::ready(s.ok().and_then(|s| {
                    let es = s.labels().get(LABEL_EXTERNAL_SECRET)?;
                    Some(object_key(&s.namespace()?, es).into())
                }))
            })
            .boxed(),
    ])
}

/// The ExternalSecrets that name a store, for each change of that store (kind, namespace,
/// name, generation). A new store or a change of its spec (a new generation: new credentials,
/// a fixed endpoint) also lets those waiting for a backoff retry go at once; a status write
/// (the store's own validation) does not.
fn requeue_by_store(
    ctx: &Arc<Context>,
    es_cache: &Arc<ExternalSecretCache>,
) -> impl Fn(StoreKind, Option<String>, String, Option<i64>) -> Vec<Arc<str>> + Clone + Send + 'static
{
    let es_cache = es_cache.clone();
    let ctx = ctx.clone();
    let generations: Arc<Mutex<HashMap<StoreId, i64>>> = Arc::default();
    move |kind, ns, name, generation| {
        let mut keys = Vec::new();
        es_cache.for_each(|es| {
            if es.uses_store(kind, ns.as_deref(), &name) {
                keys.push(es.key().clone());
            }
        });
        let generation = generation.unwrap_or_default();
        let previous = generations
            .lock()
            .expect("store generations lock")
            .insert((kind, ns, name), generation);
        // A store that appears (an ExternalSecret may have failed on "not found") or
        // whose spec changed releases them; its own status writes keep the generation.
        if previous != Some(generation) {
            let mut state = ctx.state.lock().expect("state lock");
            for key in &keys {
                if let Some(o) = state.get_mut(key) {
                    o.retry_at = None;
                }
            }
        }
        keys
    }
}
