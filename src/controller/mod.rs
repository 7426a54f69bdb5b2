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
pub mod external_secret_cache;
pub mod managed_secret;
pub mod observe;
pub mod refresh_timers;
pub mod rewrite_merge;
pub mod rollout;
mod run;
pub mod runner;
pub mod secret_store;
pub mod shard;
pub mod shutdown;
pub mod template_pool;
pub mod trigger_gate;
mod triggers;
pub mod values;

pub use run::run;

use std::{collections::HashMap, num::NonZeroI64, sync::Arc, sync::Mutex, time::Duration};

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::LabelSelector};
use kube::{
    Client, Resource,
    api::{Api, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        events::{Recorder, Reporter},
        reflector::{ObjectRef, Store},
    },
};

use crate::{
    api::{ClusterSecretStore, ExternalSecret, FIELD_MANAGER, SecretStore},
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
    /// The namespace already has its share of template renders waiting or running
    /// ([`template_pool::TemplatePool`]); put off without a word and retried soon.
    #[error(
        "namespace {namespace} already has {share} template renders waiting or running; retried soon"
    )]
    TemplatesBusy { namespace: String, share: usize },
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
            Error::TemplatesBusy { .. } => "Busy",
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
    /// Let a SecretStore mint ServiceAccount tokens for an audience the API server itself
    /// accepts (sent to the server the store names, such a token is valid against the
    /// cluster). ClusterSecretStores always may.
    pub allow_api_server_audience: bool,
    /// Reconcile only the ExternalSecrets and ClusterExternalSecrets whose labels match this
    /// label selector (Kubernetes syntax: `secret-relay.dev/shard=shard-1`,
    /// `!secret-relay.dev/shard`): one shard of the cluster's ExternalSecrets, as Flux's
    /// `--watch-label-selector`. `None`: all of them. Stores and Secrets are watched whole.
    pub watch_label_selector: Option<String>,
    /// Which Events the ExternalSecret controller publishes.
    pub events: EventPolicy,
}

/// Which Events an ExternalSecret gets (`--events`). Its `Ready` condition says the last
/// sync's outcome either way (`kubectl describe` shows it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EventPolicy {
    /// `Created`, `Updated` and `Deleted` when a sync changed the Secret, and a `SyncFailed`
    /// warning for each failure (an unchanged refresh publishes nothing), as ESO publishes
    /// them. Each is posted before the status write that reports its sync, so that one a crash
    /// cut off is posted after the restart. At N = 10,000 on two cores the initial sync's
    /// 10,000 `Created` Events took all Ready from a median 1.22 × to 1.50 × the floor
    /// (BENCHMARKS-events.md, three runs each at one commit): the default all the same, since
    /// they cost nothing once the Secrets exist (made only when a Secret changes) and
    /// `kubectl describe` shows them.
    #[default]
    Changes,
    /// Only the `SyncFailed` warnings (and other warnings): no Event for a sync that worked.
    Failures,
}

/// What the ExternalSecret controller remembers of one object; lost on restart, which only
/// costs one extra refresh. Kept small (72 bytes: `NonZeroI64` times and boxed strings, no
/// `Option` tag or capacity word), as there is one per ExternalSecret in a hash table of
/// twice as many slots at worst.
#[derive(Default)]
pub struct ObjectState {
    /// Last successful fetch time (Unix seconds).
    pub last_fetch: Option<NonZeroI64>,
    /// When the next refresh is due (Unix ms): the provider's tick after the last fetch.
    pub next_due: Option<NonZeroI64>,
    /// The `syncedResourceVersion` last synced successfully, which the cached object may not
    /// show yet (our status write is still on its way back through the watch).
    pub synced: Option<Box<str>>,
    /// `resourceVersion` of the Secret as we last wrote or verified it.
    pub secret_version: Option<Box<str>>,
    /// Consecutive failures, for backoff.
    pub failures: u32,
    /// After a failure: the `syncedResourceVersion` that failed and when its retry is due.
    /// Reconciles triggered before then by our own status write (or any change that is not a
    /// spec or annotation edit) wait for the retry instead of calling the provider again.
    pub retry_at: Option<Box<(String, std::time::Instant)>>,
    /// The due time (Unix ms) of its pending refresh timer ([`refresh_timers::RefreshTimers`]).
    pub refresh_timer: Option<NonZeroI64>,
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

fn state_key(es: &ObjectRef<ExternalSecret>) -> Box<str> {
    object_key(es.namespace.as_deref().unwrap_or_default(), &es.name)
}

impl State {
    /// The memory of `es`, if any.
    pub fn get(&self, es: &ObjectRef<ExternalSecret>) -> Option<&ObjectState> {
        self.0.get(&state_key(es))
    }

    /// The memory of the ExternalSecret `namespace/name` ([`object_key`]), if any, to change.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut ObjectState> {
        self.0.get_mut(key)
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
    pub caches_synced: tokio::sync::watch::Sender<bool>,
    /// Whether rollout restarts are on ([`Config::rollout_restart`]).
    pub rollout_restart: bool,
    /// Pending rollout restarts.
    pub restarts: rollout::Restarts,
    /// The ExternalSecrets' refresh timers.
    pub refresh_timers: Arc<refresh_timers::RefreshTimers>,
    /// The ExternalSecrets (cache, projected).
    pub external_secrets: Arc<external_secret_cache::ExternalSecretCache>,
    /// The bound on reconcile requests waiting in the runner.
    pub trigger_gate: Arc<trigger_gate::TriggerGate>,
    /// Where templates render, fairly between namespaces.
    pub templates: Arc<template_pool::TemplatePool>,
    /// Which Events to publish ([`Config::events`]).
    pub events: EventPolicy,
}

impl Context {
    /// Whether every cache has had its first list ([`Context::caches_synced`]).
    pub fn caches_are_synced(&self) -> bool {
        *self.caches_synced.borrow()
    }

    /// Resolves once every cache has had its first list.
    pub async fn synced(&self) {
        let _ = self.caches_synced.subscribe().wait_for(|s| *s).await;
    }

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
        let key = || {
            let key = state_key(es);
            self.external_secrets
                .shared_key(&key)
                .unwrap_or_else(|| key.into())
        };
        self.with_state(es, |o| {
            self.refresh_timers.set(key, due, &mut o.refresh_timer)
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

/// The API of `K` in `namespace`, or in every namespace when `None`.
pub(crate) fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// kubectl's client-side apply annotation.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
mod tests;
