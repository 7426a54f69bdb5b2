//! What reconciles an ExternalSecret: a change of it, of its managed Secret or of the store it
//! names, and its refresh timer. [`external_secret_triggers`] merges them into one stream of
//! ExternalSecrets for the trigger gate ([`super::trigger_gate`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use super::{CachedExternalSecret, Context};
use crate::api::{
    ClusterSecretStore, LABEL_EXTERNAL_SECRET, SecretStore, external_secret::StoreKind,
};

/// A store as the ExternalSecret watch sees it: kind, namespace (None for cluster stores), name.
type StoreId = (StoreKind, Option<String>, String);

/// The ExternalSecrets to reconcile, from:
/// - `external_secrets`: the ExternalSecret watch (each object applied to the cache);
/// - the refresh timers that fire, unless the ExternalSecret was deleted or its timer was set
///   again since;
/// - `stores` and `cluster_stores`: a store's change requeues every ExternalSecret that names
///   it (see [`requeue_by_store`]);
/// - `secrets`: a managed Secret's change reconciles the ExternalSecret its label names.
///
/// Watch errors are dropped here: the watches count them (`observe_api`) and back off.
pub(super) fn external_secret_triggers(
    ctx: &Arc<Context>,
    es_store: &Store<CachedExternalSecret>,
    external_secrets: impl Stream<Item = Result<CachedExternalSecret, watcher::Error>> + Send + 'static,
    stores: impl Stream<Item = Result<SecretStore, watcher::Error>> + Send + 'static,
    cluster_stores: impl Stream<Item = Result<ClusterSecretStore, watcher::Error>> + Send + 'static,
    secrets: impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = ObjectRef<CachedExternalSecret>> + Send + 'static {
    let refreshes = ctx.refresh_timers.clone().fired({
        let ctx = ctx.clone();
        move |es, due_ms| {
            let mut state = ctx.state.lock().expect("state lock");
            match state.get_mut(es) {
                Some(o) if o.refresh_timer == Some(due_ms) => {
                    o.refresh_timer = None;
                    true
                }
                _ => false,
            }
        }
    });
    let by_store = requeue_by_store(ctx, es_store);
    let by_cluster_store = by_store.clone();
    futures::stream::select_all([
        external_secrets
            .filter_map(|es| future::ready(es.ok().map(|es| ObjectRef::from_obj(&es))))
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
                    Some(ObjectRef::new(es).within(&s.namespace()?))
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
    es_store: &Store<CachedExternalSecret>,
) -> impl Fn(StoreKind, Option<String>, String, Option<i64>) -> Vec<ObjectRef<CachedExternalSecret>>
+ Clone
+ Send
+ 'static {
    let es_store = es_store.clone();
    let ctx = ctx.clone();
    let generations: Arc<Mutex<HashMap<StoreId, i64>>> = Arc::default();
    move |kind, ns, name, generation| {
        let refs = es_store
            .state()
            .into_iter()
            .filter(|es| es.uses_store(kind, ns.as_deref(), &name))
            .map(|es| ObjectRef::from_obj(&*es))
            .collect::<Vec<_>>();
        let generation = generation.unwrap_or_default();
        let previous = generations
            .lock()
            .expect("store generations lock")
            .insert((kind, ns, name), generation);
        // A store that appears (an ExternalSecret may have failed on "not found") or
        // whose spec changed releases them; its own status writes keep the generation.
        if previous != Some(generation) {
            let mut state = ctx.state.lock().expect("state lock");
            for r in &refs {
                if let Some(o) = state.get_mut(r) {
                    o.retry_at = None;
                }
            }
        }
        refs
    }
}
