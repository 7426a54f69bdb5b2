//! The controllers: ExternalSecrets (the sync pipeline) and stores (their `Ready` condition),
//! sharing one [`Context`].
//!
//! Watches are kept small: Secrets and Namespaces are watched metadata-only, Secrets filtered
//! by our `app.kubernetes.io/managed-by` label; managedFields and kubectl's last-applied
//! annotation are dropped before an object enters any cache.

pub mod build;
pub mod build_template;
pub mod cached_external_secret;
pub mod cluster_external_secret;
pub mod condition;
pub mod external_secret;
pub mod managed_secret;
pub mod refresh_timers;
pub mod rewrite_merge;
pub mod rollout;
pub mod secret_store;
pub mod shard;
pub mod shutdown;
pub mod trigger_gate;
mod triggers;

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Client, Resource, ResourceExt,
    api::{Api, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        events::{Recorder, Reporter},
        reflector,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::{
    api::{
        ClusterExternalSecret, ClusterSecretStore, ExternalSecret, FIELD_MANAGER, LABEL_MANAGED_BY,
        MANAGED_BY, SecretStore, cluster_external_secret::LABEL_CLUSTER_EXTERNAL_SECRET,
    },
    providers::{ErrorKind, ProviderError},
};
use build::BuildError;

pub use cached_external_secret::CachedExternalSecret;
pub use managed_secret::{ManagedSecret, SecretCache};
pub use secret_store::ProviderCache;
pub use shard::LABEL_SHARD;

/// Why a reconcile failed: one variant per cause, each with its fixed [`Error::category`]
/// (metrics label, log field), its `Ready` condition [`Error::reason`] and whether a retry
/// can help. The condition message, the `SyncFailed` event and the log all use its `Display`,
/// which names the cause and never a value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store the ExternalSecret names is not in the cache (`SecretStore NS/NAME`,
    /// `ClusterSecretStore NAME`).
    #[error("{store} not found")]
    StoreMissing { store: String },
    /// A ClusterSecretStore's `conditions` do not admit the ExternalSecret's namespace.
    #[error("ClusterSecretStore {store} does not allow namespace {namespace} (spec.conditions)")]
    NamespaceRefused { store: String, namespace: String },
    /// The store's provider cannot be built (credentials, login, refused settings); `store` is
    /// `<Kind>/<name>`.
    #[error("{store}: {source}")]
    Store {
        store: String,
        #[source]
        source: ProviderError,
    },
    /// The backend failed (not found, access denied, throttled, ...).
    #[error("{0}")]
    Provider(#[source] ProviderError),
    /// The spec cannot produce a Secret (property, template, decoding, rewrite).
    #[error("{0}")]
    InvalidSpec(#[from] BuildError),
    /// `refreshInterval` is not a duration the controller accepts.
    #[error("refreshInterval {value:?}: {why}")]
    RefreshInterval { value: String, why: String },
    /// The target Secret exists and is not managed by this ExternalSecret.
    #[error(
        "Secret {secret} already exists and is not managed by this ExternalSecret; it was left unchanged (delete it, or use creationPolicy Merge)"
    )]
    NotOurs { secret: String },
    /// The target Secret is immutable and its data differs.
    #[error(
        "Secret {secret} is immutable and its data differs from the remote values; delete it to let secret-relay recreate it"
    )]
    Immutable { secret: String },
    /// `creationPolicy: Merge` and the Secret does not exist.
    #[error(
        "Secret {secret} does not exist; creationPolicy Merge only adds keys to an existing Secret"
    )]
    MergeTargetMissing { secret: String },
    /// A ConfigMap, Secret or key that `template.templateFrom` names is missing, or the
    /// templates are too large; retried with backoff (the object may appear).
    #[error("{0}")]
    TemplateFrom(String),
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// The reconcile ran past its deadline (every step has its own timeout; this bounds their
    /// sum).
    #[error("the sync did not finish within {} s; it is retried", .0.as_secs())]
    Deadline(Duration),
}

impl Error {
    /// The `Ready` condition reason this error reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::StoreMissing { .. } | Error::NamespaceRefused { .. } | Error::Store { .. } => {
                "SecretStoreNotReady"
            }
            Error::MergeTargetMissing { .. } => "SecretMissing",
            _ => "SecretSyncedError",
        }
    }

    /// Fixed category, for metrics labels and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::StoreMissing { .. } | Error::NamespaceRefused { .. } | Error::Store { .. } => {
                "StoreNotReady"
            }
            Error::Provider(e) => e.kind.into(),
            Error::InvalidSpec(_) | Error::RefreshInterval { .. } => "InvalidSpec",
            Error::NotOurs { .. } | Error::Immutable { .. } => "SecretConflict",
            Error::MergeTargetMissing { .. } => "SecretMissing",
            Error::TemplateFrom(_) => "TemplateFrom",
            Error::Kube(_) => "Kube",
            Error::Deadline(_) => "Deadline",
        }
    }

    /// No retry can fix it, whether or not one is made: an invalid spec or store
    /// configuration, or a Secret that belongs to someone else. Reported as `Stalled=True`.
    pub fn stalled(&self) -> bool {
        self.permanent()
            || matches!(self, Error::NotOurs { .. } | Error::Immutable { .. })
            || matches!(self, Error::Store { source, .. } if source.kind == ErrorKind::InvalidConfig)
    }

    /// Invalid spec: retrying cannot help until the ExternalSecret changes.
    pub fn permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::RefreshInterval { .. })
            || matches!(self, Error::Provider(e) if e.kind == ErrorKind::InvalidConfig)
    }
}

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only this namespace (ExternalSecrets, SecretStores, Secrets); all when `None`.
    pub namespace: Option<String>,
    /// Also watch ClusterSecretStores (needs cluster-wide RBAC).
    pub cluster_stores: bool,
    /// Also run ClusterExternalSecrets (cluster-wide: they write ExternalSecrets in any
    /// namespace they select, whatever `namespace` says).
    pub cluster_external_secrets: bool,
    /// Restart the `rolloutRestartTargets` of an ExternalSecret whose Secret's data changed
    /// (needs `patch` on those workloads).
    pub rollout_restart: bool,
    /// ExternalSecrets reconciled at once; also the bound of the store and ClusterExternalSecret
    /// controllers.
    pub concurrency: u16,
    /// Let SecretStores without `auth` use the operator's own identity (AWS default chain,
    /// GCP Workload Identity); never with a custom endpoint. ClusterSecretStores always may.
    pub allow_secret_store_ambient_identity: bool,
    /// Reconcile only the ExternalSecrets and ClusterExternalSecrets whose labels match this
    /// label selector (Kubernetes syntax: `secret-relay.dev/shard=shard-1`,
    /// `!secret-relay.dev/shard`): one shard of the cluster's ExternalSecrets, as Flux's
    /// `--watch-label-selector`. `None`: all of them. Stores and Secrets are watched whole.
    pub watch_label_selector: Option<String>,
}

/// What the ExternalSecret controller remembers of one object; lost on restart, which only
/// costs one extra refresh.
#[derive(Default)]
pub struct ObjectState {
    /// Last successful fetch time (Unix seconds).
    pub last_fetch: Option<i64>,
    /// When the next refresh is due (Unix ms): the provider's tick after the last fetch.
    pub next_due: Option<i64>,
    /// The `syncedResourceVersion` last synced successfully, which the cached object may not
    /// show yet (our status write is still on its way back through the watch).
    pub synced: Option<String>,
    /// `resourceVersion` of the Secret as we last wrote or verified it.
    pub secret_version: Option<String>,
    /// Consecutive failures, for backoff.
    pub failures: u32,
    /// After a failure: the `syncedResourceVersion` that failed and when its retry is due.
    /// Reconciles triggered before then by our own status write (or any change that is not a
    /// spec or annotation edit) wait for the retry instead of calling the provider again.
    pub retry_at: Option<Box<(String, std::time::Instant)>>,
    /// The due time (Unix ms) of its pending refresh timer ([`refresh_timers::RefreshTimers`]).
    pub refresh_timer: Option<i64>,
}

/// Per-object memory of the ExternalSecret controller, one entry per ExternalSecret, keyed by
/// `namespace/name` in one string (an `ObjectRef` key was 96 bytes and two allocations).
#[derive(Default)]
pub struct State(HashMap<Box<str>, ObjectState>);

/// The `namespace/name` key of an object in our own caches (state, refresh timers, managed
/// Secrets): one allocation, and unambiguous since neither part may contain `/`.
pub(crate) fn object_key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

/// The ExternalSecret whose [`object_key`] is `key`.
pub(crate) fn object_ref(key: &str) -> ObjectRef<CachedExternalSecret> {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    ObjectRef::new(name).within(namespace)
}

fn state_key<K: reflector::Lookup>(es: &ObjectRef<K>) -> Box<str> {
    object_key(es.namespace.as_deref().unwrap_or_default(), &es.name)
}

impl State {
    /// The memory of `es`, if any.
    pub fn get(&self, es: &ObjectRef<ExternalSecret>) -> Option<&ObjectState> {
        self.0.get(&state_key(es))
    }

    /// The memory of `es` (an `ExternalSecret` or its cached projection), if any, to change.
    pub fn get_mut<K: reflector::Lookup>(&mut self, es: &ObjectRef<K>) -> Option<&mut ObjectState> {
        self.0.get_mut(&state_key(es))
    }

    /// The memory of `es`, created empty if needed.
    pub fn entry(&mut self, es: &ObjectRef<ExternalSecret>) -> &mut ObjectState {
        self.0.entry(state_key(es)).or_default()
    }

    /// Drops everything remembered of a deleted ExternalSecret.
    pub fn forget(&mut self, es: &ObjectRef<ExternalSecret>) {
        self.0.remove(&state_key(es));
    }
}

/// Everything a reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// SecretStores (cache).
    pub stores: Store<SecretStore>,
    /// ClusterSecretStores (cache).
    pub cluster_stores: Store<ClusterSecretStore>,
    /// Managed Secrets, projected (cache).
    pub secrets: Arc<SecretCache>,
    /// Namespaces, metadata only (cache), for ClusterSecretStore conditions.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Built providers.
    pub providers: Arc<ProviderCache>,
    /// Event recorder (its cache folds repeated events into series).
    pub recorder: Recorder,
    /// Who reports our events (for recorders without that cache).
    pub reporter: Reporter,
    /// Per-object memory.
    pub state: Mutex<State>,
    /// Whether every cache (stores, cluster stores and namespaces when watched, Secrets,
    /// ExternalSecrets) has had its first list; ExternalSecrets wait for it.
    pub caches_synced: std::sync::atomic::AtomicBool,
    /// Whether rollout restarts are on ([`Config::rollout_restart`]).
    pub rollout_restart: bool,
    /// Pending rollout restarts.
    pub restarts: rollout::Restarts,
    /// The ExternalSecrets' refresh timers.
    pub refresh_timers: Arc<refresh_timers::RefreshTimers>,
    /// The ExternalSecrets (cache, projected).
    pub external_secrets: Store<CachedExternalSecret>,
    /// The bound on reconcile requests waiting in kube's queue.
    pub trigger_gate: Arc<trigger_gate::TriggerGate>,
}

impl Context {
    /// Runs `f` on the memory of `es` (created empty if needed), under the state lock.
    pub fn with_state<T>(
        &self,
        es: &ObjectRef<ExternalSecret>,
        f: impl FnOnce(&mut ObjectState) -> T,
    ) -> T {
        f(self.state.lock().expect("state lock").entry(es))
    }

    /// Sets the refresh timer of `es` for the refresh due at `due` (Unix ms, and the instant
    /// the timer fires); `None`: no refresh pending. The controller reconciles `es` when it
    /// fires.
    pub fn set_refresh_timer(
        &self,
        es: &ObjectRef<ExternalSecret>,
        due: Option<(i64, tokio::time::Instant)>,
    ) {
        let namespace = es.namespace.as_deref().unwrap_or_default();
        self.with_state(es, |o| {
            self.refresh_timers
                .set(namespace, &es.name, due, &mut o.refresh_timer)
        });
    }
}

/// Patch parameters of every non-apply write.
pub(crate) fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Whether `labels` match a LabelSelector, by kube's own [`kube::core::Selector`]
/// (`matchLabels`, and `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`). An
/// invalid selector (an unknown operator, `In` without values) matches nothing.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    use kube::core::{Selector, SelectorExt};
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controllers until `shutdown` resolves, then lets running reconciles finish and
/// returns. `ready` is called once every cache has synced (for `/readyz`).
pub async fn run(
    client: Client,
    config: Config,
    ready: impl FnOnce() + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.boxed().shared();
    // Lists are paged (kube's 500 objects a page) and consistent: `resourceVersion=0` ("any")
    // makes the API server ignore the page size and answer with every object at once, so a
    // list is held whole, its JSON and every parsed object, before the first is projected into
    // a cache. From Kubernetes 1.31 on a consistent list is served from the watch cache too.
    let wc = watcher::Config::default();
    // This instance's shard: the ExternalSecrets (and ClusterExternalSecrets) it reconciles.
    let shard_wc = match &config.watch_label_selector {
        Some(selector) => {
            shard::check_selector(&client, &config.namespace, selector).await?;
            wc.clone().labels(selector)
        }
        None => wc.clone(),
    };
    let providers = Arc::new(ProviderCache::new(
        config.allow_secret_store_ambient_identity,
    ));
    // A deleted store or namespace takes its providers with it.
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

    let (stores, stores_writer) = reflector::store();
    let store_events = relist_at_once(watcher(
        api_for::<SecretStore>(&client, &config.namespace),
        wc.clone(),
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect(forget_store(&providers))
    .modify(strip)
    .reflect(stores_writer)
    .touched_objects();

    let (cluster_stores, cluster_writer) = reflector::store();
    let cluster_api: Api<ClusterSecretStore> = Api::all(client.clone());
    let cluster_events = if config.cluster_stores {
        relist_at_once(watcher(cluster_api, wc.clone()))
            .backoff(watch_backoff())
            .inspect(observe_api)
            .inspect(forget_store(&providers))
            .modify(strip)
            .reflect(cluster_writer)
            .touched_objects()
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };

    let secrets = Arc::new(SecretCache::default());
    let secret_wc = wc
        .clone()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    let secret_events = relist_at_once(watcher(
        api_for::<PartialObjectMeta<Secret>>(&client, &config.namespace),
        secret_wc,
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect({
        let secrets = secrets.clone();
        move |event| {
            if let Ok(event) = event {
                secrets.apply(event);
            }
        }
    })
    .touched_objects();

    let (namespaces, ns_writer) = reflector::store();
    let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let ns_events = if config.cluster_stores || config.cluster_external_secrets {
        relist_at_once(watcher(ns_api, wc.clone()))
            .backoff(watch_backoff())
            .inspect(observe_api)
            .inspect({
                let providers = providers.clone();
                move |event| {
                    if let Ok(watcher::Event::Delete(ns)) = event {
                        providers.forget_namespace(&ns.name_any());
                    }
                }
            })
            .modify(strip)
            .reflect(ns_writer)
            .touched_objects()
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };

    let (es_store, es_writer) = reflector::store();
    let reporter = Reporter {
        controller: "secret-relay".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: stores.clone(),
        cluster_stores: cluster_stores.clone(),
        secrets: secrets.clone(),
        namespaces: namespaces.clone(),
        providers,
        recorder: Recorder::new(client.clone(), reporter.clone()),
        reporter,
        state: Mutex::new(State::default()),
        caches_synced: Default::default(),
        rollout_restart: config.rollout_restart,
        restarts: Default::default(),
        refresh_timers: Default::default(),
        external_secrets: es_store.clone(),
        trigger_gate: Arc::new(trigger_gate::TriggerGate::new(
            usize::from(config.concurrency)
                .saturating_mul(GATE_PER_WORKER)
                .max(GATE_MIN),
        )),
    });

    // Store controllers run off their own watches; the ExternalSecret controller is triggered
    // by the shared caches' events through the trigger gate. Their concurrency is bounded too:
    // unbounded, a start with 200 stores validated all at once and each status write opened
    // its own connection to the API server, 232 connections kept idle for 90 s with their
    // buffers (about 35 KB each, 8 MiB in all).
    let store_config = controller::Config::default().concurrency(config.concurrency);
    let store_ctl = Controller::new(
        api_for::<SecretStore>(&client, &config.namespace),
        wc.clone(),
    )
    .with_config(store_config.clone())
    .trigger_backoff(watch_backoff())
    .graceful_shutdown_on(shutdown.clone())
    .run(
        secret_store::reconcile_store,
        store_error_policy,
        ctx.clone(),
    )
    .for_each(|_| future::ready(()));
    let cluster_store_ctl = async {
        if config.cluster_stores {
            Controller::new(Api::<ClusterSecretStore>::all(client.clone()), wc.clone())
                .with_config(store_config.clone())
                .trigger_backoff(watch_backoff())
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    secret_store::reconcile_cluster_store,
                    store_error_policy,
                    ctx.clone(),
                )
                .for_each(|_| future::ready(()))
                .await
        }
    };

    let es_events = relist_at_once(watcher(
        api_for::<ExternalSecret>(&client, &config.namespace),
        shard_wc.clone(),
    ))
    .backoff(watch_backoff())
    .inspect(observe_api)
    .inspect({
        let ctx = ctx.clone();
        move |event| {
            if let Ok(watcher::Event::Delete(es)) = event {
                ctx.state
                    .lock()
                    .expect("state lock")
                    .forget(&ObjectRef::from_obj(es));
            }
        }
    })
    .modify(strip)
    .map_ok(CachedExternalSecret::project_event)
    .reflect(es_writer)
    .applied_objects();
    crate::metrics::watch_external_secrets(es_store.clone());
    crate::metrics::watch_trigger_gate(ctx.trigger_gate.clone());
    // Every trigger goes through the gate (trigger_gate.rs), which lets a bounded number into
    // kube's queue; the controller's own trigger is empty, since the gate polls the
    // ExternalSecret watch (it feeds the cache the controller reads).
    let triggers = triggers::external_secret_triggers(
        &ctx,
        &es_store,
        es_events,
        store_events,
        cluster_events,
        secret_events,
    );
    let es_ctl = Controller::for_stream(
        futures::stream::pending::<Result<CachedExternalSecret, watcher::Error>>(),
        es_store.clone(),
    )
    .with_config(controller::Config::default().concurrency(config.concurrency))
    .reconcile_on(ctx.trigger_gate.clone().gate(triggers))
    .graceful_shutdown_on(shutdown.clone());

    let caches = {
        let (stores, cluster_stores, secrets, namespaces, es_store) = (
            stores.clone(),
            cluster_stores.clone(),
            secrets.clone(),
            namespaces.clone(),
            es_store.clone(),
        );
        let cluster = config.cluster_stores;
        let watch_namespaces = config.cluster_stores || config.cluster_external_secrets;
        let ctx = ctx.clone();
        async move {
            let _ = stores.wait_until_ready().await;
            let _ = secrets.wait_until_ready().await;
            let _ = es_store.wait_until_ready().await;
            if cluster {
                let _ = cluster_stores.wait_until_ready().await;
            }
            if watch_namespaces {
                let _ = namespaces.wait_until_ready().await;
            }
            ctx.caches_synced
                .store(true, std::sync::atomic::Ordering::Release);
            ready();
        }
    };
    // Namespace changes re-select every ClusterExternalSecret's namespaces.
    let ces_run = async {
        if config.cluster_external_secrets {
            // A change to one of the ExternalSecrets it made (in any namespace: a metadata
            // watch of those labelled as such) reconciles its owner, so a deleted one is made
            // again at once.
            let made = relist_at_once(watcher(
                Api::<PartialObjectMeta<ExternalSecret>>::all(client.clone()),
                wc.clone().labels(LABEL_CLUSTER_EXTERNAL_SECRET),
            ))
            .backoff(watch_backoff())
            .inspect(observe_api)
            .touched_objects();
            Controller::new(
                Api::<ClusterExternalSecret>::all(client.clone()),
                shard_wc.clone(),
            )
            .with_config(store_config.clone())
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
        } else {
            ns_events
                .take_until(shutdown.clone())
                .for_each(|_| future::ready(()))
                .await
        }
    };
    // A watch that reconnects after an outage resumes where it was and may see no event for
    // long, so it cannot say the API server is back: a light request does.
    let api_probe = {
        let client = client.clone();
        let shutdown = shutdown.clone();
        async move {
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
                _ = shutdown => {}
            }
        }
    };
    let caches = async {
        tokio::select! {
            _ = caches => {}
            _ = shutdown.clone() => {}
        }
    };
    let gate = ctx.trigger_gate.clone();
    let es_run = es_ctl
        .run(
            external_secret::reconcile,
            external_secret::error_policy,
            ctx.clone(),
        )
        .for_each(move |res| {
            match res {
                // kube drops a request whose ExternalSecret is not in the cache: its gate
                // slot is free (no reconcile starts to free it).
                Err(controller::Error::ObjectNotFound(es)) => gate.released(&object_key(
                    es.namespace.as_deref().unwrap_or_default(),
                    &es.name,
                )),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
                Ok(_) => {}
            }
            future::ready(())
        });
    let restarts = rollout::run(ctx.clone(), shutdown.clone());
    shutdown::join_parts(
        [
            ("ExternalSecret controller", es_run.boxed()),
            ("rollout restarts", restarts.boxed()),
            ("SecretStore controller", store_ctl.boxed()),
            ("ClusterSecretStore controller", cluster_store_ctl.boxed()),
            ("ClusterExternalSecret controller", ces_run.boxed()),
            ("cache sync", caches.boxed()),
            ("API probe", api_probe.boxed()),
        ],
        shutdown.clone(),
    )
    .await;
    Ok(())
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

/// Reconcile requests let into kube's queue at once ([`trigger_gate::TriggerGate`]), per
/// concurrent reconcile: enough that a worker never waits for the next one.
const GATE_PER_WORKER: usize = 4;
/// The least number of requests let into kube's queue at once.
const GATE_MIN: usize = 64;

/// Tells the metrics (and `/readyz`) whether a watch got an answer from the API server.
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

fn observe_api<T>(result: &Result<T, watcher::Error>) {
    crate::metrics::kube_api_observed(result.is_ok());
}

/// kubectl's client-side apply annotation.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn store_error_policy<K>(_: Arc<K>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %err, category = err.category(), "store reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

#[cfg(test)]
mod tests;
