//! [`run`]: the watches that fill the shared caches, the [`Context`] over them, and the four
//! controllers (SecretStore, ClusterSecretStore, ExternalSecret, ClusterExternalSecret), each
//! built by a function of its own and joined until shutdown.

use std::{sync::Arc, sync::Mutex, time::Duration};

use futures::{
    FutureExt, Stream, StreamExt, TryStreamExt, future,
    future::{BoxFuture, Shared},
    stream::BoxStream,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Client, Resource, ResourceExt,
    api::Api,
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Recorder, Reporter},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use super::{
    CachedExternalSecret, Config, Context, Error, LAST_APPLIED, State, api_for,
    cluster_external_secret, external_secret, external_secret_cache::ExternalSecretCache,
    managed_secret::SecretCache, rollout, runner, secret_store, secret_store::ProviderCache, shard,
    shutdown, template_pool::TemplatePool, trigger_gate, triggers,
};
use crate::api::{
    ClusterExternalSecret, ClusterSecretStore, ExternalSecret, LABEL_MANAGED_BY, MANAGED_BY,
    SecretStore, SecretStoreStatus, cluster_external_secret::LABEL_CLUSTER_EXTERNAL_SECRET,
};

/// The shutdown signal, shared by every part.
type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A watch's events after its cache has seen them.
type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Runs the controllers until `shutdown` resolves, then lets running reconciles finish and
/// returns. `ready` is called once every cache has synced (for `/readyz`).
///
/// Errors: an invalid `watch_label_selector` ([`shard::check_selector`]), before anything
/// starts.
pub async fn run(
    client: Client,
    config: Config,
    ready: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown: Shutdown = shutdown.boxed().shared();
    // This instance's shard: the ExternalSecrets (and ClusterExternalSecrets) it reconciles.
    let shard_wc = match &config.watch_label_selector {
        Some(selector) => {
            shard::check_selector(&client, &config.namespace, selector).await?;
            list_config().labels(selector)
        }
        None => list_config(),
    };
    let providers = Arc::new(
        ProviderCache::new(config.allow_secret_store_ambient_identity)
            .allowing_api_server_audience(config.allow_api_server_audience),
    );
    let (stores, store_events) = watch_stores(&client, &config, &providers);
    let (cluster_stores, cluster_events) = watch_cluster_stores(&client, &config, &providers);
    let (secrets, secret_events) = watch_secrets(&client, &config);
    let (namespaces, ns_events) = watch_namespaces(&client, &config, &providers);
    let es_cache = Arc::new(ExternalSecretCache::default());
    let ctx = context(
        &client,
        &config,
        providers,
        (
            stores,
            cluster_stores,
            secrets,
            namespaces,
            es_cache.clone(),
        ),
    );
    let es_events = watch_external_secrets(&client, &config, shard_wc.clone(), &ctx);
    register_metrics(&ctx);
    let triggers = triggers::external_secret_triggers(
        &ctx,
        &es_cache,
        es_events,
        store_events,
        cluster_events,
        secret_events,
    );
    shutdown::join_parts(
        [
            (
                "ExternalSecret controller",
                external_secret_controller(&ctx, &config, triggers, &shutdown).boxed(),
            ),
            (
                "rollout restarts",
                rollout::run(ctx.clone(), shutdown.clone()).boxed(),
            ),
            (
                "SecretStore controller",
                store_controller(&ctx, &config, &shutdown).boxed(),
            ),
            (
                "ClusterSecretStore controller",
                cluster_store_controller(&ctx, &config, &shutdown).boxed(),
            ),
            (
                "ClusterExternalSecret controller",
                cluster_external_secret_controller(&ctx, &config, shard_wc, ns_events, &shutdown)
                    .boxed(),
            ),
            (
                "cache sync",
                caches_synced(&ctx, &config, ready, &shutdown).boxed(),
            ),
            ("API probe", api_probe(&client, &shutdown).boxed()),
        ],
        shutdown.clone(),
    )
    .await;
    Ok(())
}

/// How every watch lists: paged (kube's 500 objects a page) and consistent.
/// `resourceVersion=0` ("any") makes the API server ignore the page size and answer with every
/// object at once, so a list is held whole, its JSON and every parsed object, before the first
/// is projected into a cache. From Kubernetes 1.31 on a consistent list is served from the
/// watch cache too.
fn list_config() -> watcher::Config {
    watcher::Config::default()
}

/// A deleted store or namespace takes its providers with it.
fn forget_store<K: Resource>(
    providers: &Arc<ProviderCache>,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let providers = providers.clone();
    move |event| {
        if let Ok(watcher::Event::Delete(obj)) = event {
            providers.forget_store(obj.meta().uid.as_deref().unwrap_or_default());
        }
    }
}

/// SecretStores of the watched namespace(s), cached.
fn watch_stores(
    client: &Client,
    config: &Config,
    providers: &Arc<ProviderCache>,
) -> (Store<SecretStore>, Events<SecretStore>) {
    watch_store_kind(api_for(client, &config.namespace), providers)
}

/// ClusterSecretStores, cached, when [`Config::cluster_stores`] (else an empty cache).
fn watch_cluster_stores(
    client: &Client,
    config: &Config,
    providers: &Arc<ProviderCache>,
) -> (Store<ClusterSecretStore>, Events<ClusterSecretStore>) {
    if !config.cluster_stores {
        return (reflector::store().0, futures::stream::pending().boxed());
    }
    watch_store_kind(Api::all(client.clone()), providers)
}

/// The stores of `api`, cached; a deleted one drops its providers.
fn watch_store_kind<K>(api: Api<K>, providers: &Arc<ProviderCache>) -> (Store<K>, Events<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = relist_at_once(watcher(api, list_config()))
        .backoff(watch_backoff())
        .inspect(observe_api)
        .inspect(forget_store(providers))
        .modify(strip)
        .reflect(writer)
        .touched_objects()
        .boxed();
    (store, events)
}

/// The Secrets we manage (our `managed-by` label), metadata only, projected into a
/// [`SecretCache`].
fn watch_secrets(
    client: &Client,
    config: &Config,
) -> (Arc<SecretCache>, Events<PartialObjectMeta<Secret>>) {
    let secrets = Arc::new(SecretCache::default());
    let wc = list_config().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let cache = secrets.clone();
    let events = relist_at_once(watcher(
        api_for::<PartialObjectMeta<Secret>>(client, &config.namespace),
        wc,
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect(move |event| {
        if let Ok(event) = event {
            cache.apply(event);
        }
    })
    .touched_objects()
    .boxed();
    (secrets, events)
}

/// Namespaces, metadata only, cached when ClusterSecretStores or ClusterExternalSecrets need
/// them (conditions, namespace selectors); a deleted namespace drops its providers.
fn watch_namespaces(
    client: &Client,
    config: &Config,
    providers: &Arc<ProviderCache>,
) -> (
    Store<PartialObjectMeta<Namespace>>,
    Events<PartialObjectMeta<Namespace>>,
) {
    let (store, writer) = reflector::store();
    if !(config.cluster_stores || config.cluster_external_secrets) {
        return (store, futures::stream::pending().boxed());
    }
    let providers = providers.clone();
    let events = relist_at_once(watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        list_config(),
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(ns)) = event {
            providers.forget_namespace(&ns.name_any());
        }
    })
    .modify(strip)
    .reflect(writer)
    .touched_objects()
    .boxed();
    (store, events)
}

/// The ExternalSecrets of this shard, projected into [`CachedExternalSecret`]s in
/// `ctx.external_secrets`; a deleted one drops its per-object memory. Yields the key
/// (`namespace/name`) of each object applied.
fn watch_external_secrets(
    client: &Client,
    config: &Config,
    shard_wc: watcher::Config,
    ctx: &Arc<Context>,
) -> Events<Arc<str>> {
    let cache = ctx.external_secrets.clone();
    let ctx = ctx.clone();
    relist_at_once(watcher(
        api_for::<ExternalSecret>(client, &config.namespace),
        shard_wc,
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(es)) = event {
            ctx.state
                .lock()
                .expect("state lock")
                .forget(&ObjectRef::from_obj(es));
        }
    })
    .modify(strip)
    .map_ok(CachedExternalSecret::project_event)
    .inspect_ok(move |event| cache.apply(event))
    .applied_objects()
    .map_ok(|es: Arc<CachedExternalSecret>| es.key().clone())
    .boxed()
}

/// The caches a [`Context`] reads.
type Caches = (
    Store<SecretStore>,
    Store<ClusterSecretStore>,
    Arc<SecretCache>,
    Store<PartialObjectMeta<Namespace>>,
    Arc<ExternalSecretCache>,
);

fn context(
    client: &Client,
    config: &Config,
    providers: Arc<ProviderCache>,
    (stores, cluster_stores, secrets, namespaces, external_secrets): Caches,
) -> Arc<Context> {
    let reporter = Reporter {
        controller: "secret-relay".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Arc::new(Context {
        client: client.clone(),
        stores,
        cluster_stores,
        secrets,
        namespaces,
        providers,
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        state: Mutex::new(State::default()),
        caches_synced: tokio::sync::watch::Sender::new(false),
        rollout_restart: config.rollout_restart,
        restarts: Default::default(),
        refresh_timers: Default::default(),
        external_secrets,
        templates: Arc::new(TemplatePool::for_cores()),
        events: config.events,
        // One namespace holds at most as many admitted requests as there are workers.
        trigger_gate: Arc::new(trigger_gate::TriggerGate::with_share(
            usize::from(config.concurrency)
                .saturating_mul(GATE_PER_WORKER)
                .max(GATE_MIN),
            usize::from(config.concurrency),
        )),
    })
}

/// What the controller owns that `/metrics` reports at scrape time: ExternalSecrets and stores
/// by Ready, the certificates' notAfter, and the trigger gate's counts.
fn register_metrics(ctx: &Arc<Context>) {
    let cached = ctx.external_secrets.clone();
    crate::metrics::watch_external_secrets(move || {
        let mut counts = [0i64; 3];
        cached.for_each(|es| {
            counts[match es.ready {
                Some(true) => 0,
                Some(false) => 1,
                None => 2,
            }] += 1;
        });
        counts
    });
    let cached = ctx.external_secrets.clone();
    crate::metrics::watch_certificates(move || {
        let mut expiries = Vec::new();
        cached.for_each(|es| {
            for (generator, not_after) in es.certificates.iter().flat_map(|c| c.iter()) {
                expiries.push((
                    es.namespace().to_string(),
                    es.name().to_string(),
                    generator.to_string(),
                    *not_after,
                ));
            }
        });
        expiries
    });
    let gate = ctx.trigger_gate.clone();
    crate::metrics::watch_reconcile_requests(move || gate.counts());
    let (stores, cluster_stores) = (ctx.stores.clone(), ctx.cluster_stores.clone());
    crate::metrics::watch_stores(move || {
        [
            ready_counts(stores.state().iter().map(|s| s.status.as_ref())),
            ready_counts(cluster_stores.state().iter().map(|s| s.status.as_ref())),
        ]
    });
}

/// Stores whose Ready condition is `True`, `False` and absent (or unknown), in that order.
fn ready_counts<'a>(statuses: impl Iterator<Item = Option<&'a SecretStoreStatus>>) -> [i64; 3] {
    let mut counts = [0i64; 3];
    for status in statuses {
        let ready = status
            .into_iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == "Ready");
        counts[match ready.map(|c| c.status.as_str()) {
            Some("True") => 0,
            Some("False") => 1,
            _ => 2,
        }] += 1;
    }
    counts
}

/// The controller configuration of the store and ClusterExternalSecret controllers: at most
/// [`Config::concurrency`] reconciles at once. Unbounded, a start with 200 stores validated
/// all at once and each status write opened its own connection to the API server, 232
/// connections kept idle for 90 s with their buffers (about 35 KB each, 8 MiB in all).
fn bounded(config: &Config) -> controller::Config {
    controller::Config::default().concurrency(config.concurrency)
}

/// The SecretStore controller, off its own watch.
async fn store_controller(ctx: &Arc<Context>, config: &Config, shutdown: &Shutdown) {
    let api = api_for::<SecretStore>(&ctx.client, &config.namespace);
    run_store_controller(api, secret_store::reconcile_store, ctx, config, shutdown).await
}

/// The ClusterSecretStore controller, when [`Config::cluster_stores`].
async fn cluster_store_controller(ctx: &Arc<Context>, config: &Config, shutdown: &Shutdown) {
    if config.cluster_stores {
        let api = Api::<ClusterSecretStore>::all(ctx.client.clone());
        run_store_controller(
            api,
            secret_store::reconcile_cluster_store,
            ctx,
            config,
            shutdown,
        )
        .await
    }
}

/// A store controller over `api` with `reconcile`: at most `--concurrency` at once, its
/// watch backed off as every watch, drained on shutdown.
async fn run_store_controller<K, Fut>(
    api: Api<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> Fut,
    ctx: &Arc<Context>,
    config: &Config,
    shutdown: &Shutdown,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    Controller::new(api, list_config())
        .with_config(bounded(config))
        .trigger_backoff(watch_backoff())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, store_error_policy, ctx.clone())
        .for_each(|_| future::ready(()))
        .await
}

/// The ExternalSecret controller: our runner ([`runner`]) over the ExternalSecret cache,
/// `--concurrency` reconciles at once. Every trigger goes through the gate (trigger_gate.rs),
/// which lets a bounded number into the runner.
async fn external_secret_controller(
    ctx: &Arc<Context>,
    config: &Config,
    triggers: impl Stream<Item = Arc<str>> + Send + 'static,
    shutdown: &Shutdown,
) {
    let runner = runner::Runner {
        gate: ctx.trigger_gate.clone(),
        cache: ctx.external_secrets.clone(),
        concurrency: usize::from(config.concurrency),
    };
    runner
        .run(
            ctx.clone(),
            triggers,
            ctx.synced(),
            external_secret::reconcile,
            external_secret::error_policy,
            shutdown.clone(),
        )
        .await
}

/// The ClusterExternalSecret controller, when [`Config::cluster_external_secrets`]: namespace
/// changes re-select every ClusterExternalSecret's namespaces, and a change to one of the
/// ExternalSecrets it made (in any namespace: a metadata watch of those labelled as such)
/// reconciles its owner, so a deleted one is made again at once. Otherwise the namespace
/// watch (ClusterSecretStore conditions) is only drained.
async fn cluster_external_secret_controller(
    ctx: &Arc<Context>,
    config: &Config,
    shard_wc: watcher::Config,
    ns_events: Events<PartialObjectMeta<Namespace>>,
    shutdown: &Shutdown,
) {
    if !config.cluster_external_secrets {
        return ns_events
            .take_until(shutdown.clone())
            .for_each(|_| future::ready(()))
            .await;
    }
    let made = relist_at_once(watcher(
        Api::<PartialObjectMeta<ExternalSecret>>::all(ctx.client.clone()),
        list_config().labels(LABEL_CLUSTER_EXTERNAL_SECRET),
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .touched_objects();
    Controller::new(
        Api::<ClusterExternalSecret>::all(ctx.client.clone()),
        shard_wc,
    )
    .with_config(bounded(config))
    .trigger_backoff(watch_backoff())
    .reconcile_all_on(ns_events.map(|_| ()))
    .owns_stream(made)
    .graceful_shutdown_on(shutdown.clone())
    .run(
        cluster_external_secret::reconcile,
        cluster_external_secret::error_policy,
        ctx.clone(),
    )
    .for_each(|_| future::ready(()))
    .await
}

/// Waits for every cache's first list (stores, Secrets, ExternalSecrets, and cluster stores
/// and namespaces when watched), then marks the context synced and calls `ready`.
async fn caches_synced(
    ctx: &Arc<Context>,
    config: &Config,
    ready: impl FnOnce(),
    shutdown: &Shutdown,
) {
    let synced = async {
        let _ = ctx.stores.wait_until_ready().await;
        let _ = ctx.secrets.wait_until_ready().await;
        let _ = ctx.external_secrets.wait_until_ready().await;
        if config.cluster_stores {
            let _ = ctx.cluster_stores.wait_until_ready().await;
        }
        if config.cluster_stores || config.cluster_external_secrets {
            let _ = ctx.namespaces.wait_until_ready().await;
        }
        ctx.caches_synced.send_replace(true);
        ready();
    };
    tokio::select! {
        _ = synced => {}
        _ = shutdown.clone() => {}
    }
}

/// A watch that reconnects after an outage resumes where it was and may see no event for
/// long, so it cannot say the API server is back: a light request (`GET /version`, every
/// [`API_PROBE_INTERVAL`] while it is taken for unreachable) does.
async fn api_probe(client: &Client, shutdown: &Shutdown) {
    let probe = async {
        loop {
            tokio::time::sleep(API_PROBE_INTERVAL).await;
            if !crate::metrics::kube_api_up() && client.apiserver_version().await.is_ok() {
                crate::metrics::kube_api_observed(true);
            }
        }
    };
    tokio::select! {
        _ = probe => {}
        _ = shutdown.clone() => {}
    }
}

/// Drops what no reconcile reads before an object enters a cache: `managedFields` and
/// kubectl's `last-applied-configuration` annotation (a second copy of the whole object), most
/// of a cached object's size.
fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// While the API server is taken for unreachable, how often `GET /version` checks whether it is
/// back.
const API_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Reconcile requests let into the runner at once ([`trigger_gate::TriggerGate`]), per
/// concurrent reconcile: enough that a worker never waits for the next one.
const GATE_PER_WORKER: usize = 4;
/// The least number of requests let into the runner at once.
const GATE_MIN: usize = 64;

/// The backoff of every watch after an error: 0.5 s doubling to at most 5 s, with jitter,
/// reset by the next event (kube's default grows to 30 s and resets only after 120 s quiet:
/// after a 15 s API server outage the ExternalSecret watch waited another 21 to 43 s, so a
/// change made once the server was back took over 60 s to sync). Each watch makes at most one
/// request per 5 s while the API server is gone.
fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    watcher::ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(5))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times(),
    )
}

/// Drops a watch's 410 Gone ("too old resource version", seen after an API server restart)
/// before the backoff sees it: the watcher has already dropped its resource version and
/// lists again on its next poll, so that error is a step of the protocol, not a failure to
/// wait on. Any error of the list itself is still backed off.
fn relist_at_once<K: Send>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send {
    events.filter(|event| {
        future::ready(
            !matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410),
        )
    })
}

/// Tells the metrics (and `/readyz`) whether a watch got an answer from the API server.
fn observe_api<T>(result: &Result<T, watcher::Error>) {
    crate::metrics::kube_api_observed(result.is_ok());
}

fn store_error_policy<K>(_: Arc<K>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %err, category = err.category(), "store reconcile failed");
    Action::requeue(Duration::from_secs(30))
}
