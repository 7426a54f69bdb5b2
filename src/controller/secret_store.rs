//! Stores: resolving an ExternalSecret's store (and checking its namespace may use it), the
//! provider cache, and the reconcile that keeps a store's `Ready` condition.
//!
//! Pipeline of a store reconcile: build provider (cached) → validate → status.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta},
};
use kube::{
    Resource, ResourceExt,
    api::{Api, Patch},
    core::PartialObjectMeta,
    runtime::{controller::Action, reflector::ObjectRef},
};
use serde_json::json;

use super::{Context, Error, condition};
use crate::{
    api::{
        ClusterSecretStore, ExternalSecret, SecretStore,
        external_secret::{SecretStoreRef, StoreKind},
        secret_store::{AwsService, SecretStoreProvider},
    },
    providers::{
        AuthContext, Coalescer, DynProvider, ErrorKind, ProviderError, SharedProvider,
        aws::{SecretsManagerProvider, SsmProvider},
        kms::KmsProvider,
        vault::{PreparedVault, VaultKvProvider},
    },
};

/// How long a built provider (its login, its credentials) is reused before it is built again,
/// so that rotated credential Secrets are picked up.
pub const PROVIDER_TTL: Duration = Duration::from_secs(600);

/// Default store re-validation interval (seconds), as ESO.
const DEFAULT_STORE_REFRESH_SECS: i64 = 300;

/// Identity of a built provider: the store object at one generation, plus the namespace its
/// references resolved in (a ClusterSecretStore resolves them per ExternalSecret namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderKey {
    kind: StoreKind,
    uid: String,
    generation: i64,
    ref_namespace: String,
}

/// A store resolved for one ExternalSecret.
#[derive(Clone)]
pub struct ResolvedStore {
    /// `<Kind>/<name>`, for messages and the `secret-relay.dev/store` annotation.
    pub label: String,
    /// The provider configuration.
    pub provider: SecretStoreProvider,
    key: ProviderKey,
    auth: AuthContext,
}

impl ResolvedStore {
    /// A store object (its uid and generation from `meta`) with references resolving in
    /// `ref_namespace` through `client` (a ClusterSecretStore's references may also name a
    /// namespace). Its provider comes from [`ProviderCache::get`].
    pub fn new(
        client: &kube::Client,
        kind: StoreKind,
        name: &str,
        provider: &SecretStoreProvider,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        ref_namespace: String,
    ) -> Self {
        ResolvedStore {
            label: format!("{}/{name}", kind.as_str()),
            provider: provider.clone(),
            key: ProviderKey {
                kind,
                uid: meta.uid.clone().unwrap_or_default(),
                generation: meta.generation.unwrap_or_default(),
                ref_namespace: ref_namespace.clone(),
            },
            auth: AuthContext::new(
                client.clone(),
                ref_namespace,
                kind == StoreKind::ClusterSecretStore,
            ),
        }
    }
}

/// Finds the store `es` refers to in the reflector caches and checks that the
/// ExternalSecret's namespace may use it. Errors: `StoreMissing`, `NamespaceRefused`.
pub fn resolve(es: &ExternalSecret, ctx: &Context) -> Result<ResolvedStore, Error> {
    resolve_ref(es, &es.spec.secret_store_ref, ctx)
}

/// [`resolve`] for the store `r` names (`secretStoreRef`, or a `data[].sourceRef.storeRef`):
/// a SecretStore of `es`'s namespace, or a ClusterSecretStore whose conditions admit it.
pub fn resolve_ref(
    es: &ExternalSecret,
    r: &SecretStoreRef,
    ctx: &Context,
) -> Result<ResolvedStore, Error> {
    let ns = es.namespace().unwrap_or_default();
    match r.kind {
        StoreKind::SecretStore => {
            let store = ctx
                .stores
                .get(&ObjectRef::new(&r.name).within(&ns))
                .ok_or_else(|| Error::StoreMissing {
                    store: format!("SecretStore {ns}/{}", r.name),
                })?;
            Ok(ResolvedStore::new(
                &ctx.client,
                StoreKind::SecretStore,
                &r.name,
                &store.spec.provider,
                store.meta(),
                ns,
            ))
        }
        StoreKind::ClusterSecretStore => {
            let store = ctx
                .cluster_stores
                .get(&ObjectRef::new(&r.name))
                .ok_or_else(|| Error::StoreMissing {
                    store: format!("ClusterSecretStore {}", r.name),
                })?;
            let namespace = ctx.namespaces.get(&ObjectRef::new(&ns));
            if !namespace_allowed(&store, &ns, namespace.as_deref()) {
                return Err(Error::NamespaceRefused {
                    store: r.name.clone(),
                    namespace: ns,
                });
            }
            Ok(ResolvedStore::new(
                &ctx.client,
                StoreKind::ClusterSecretStore,
                &r.name,
                &store.spec.provider,
                store.meta(),
                ns,
            ))
        }
    }
}

/// Whether namespace `ns` (with metadata `meta`, if known) satisfies a ClusterSecretStore's
/// `conditions`, as ESO decides it (`ClientManager.isNamespaceAllowed`): no conditions admit
/// every namespace; otherwise a namespace is admitted when any `namespaceSelector`, any
/// `namespaces` entry or any `namespaceRegexes` entry of any condition matches it (OR across
/// every field of every condition), so a condition that names nothing admits nobody. Fails
/// closed: a store with an invalid selector or regex anywhere ([`conditions_error`]) admits
/// no namespace (the store reports it, `Ready=False`). An empty `namespaceSelector: {}`
/// selects every namespace, as a Kubernetes label selector does.
pub fn namespace_allowed(
    store: &ClusterSecretStore,
    ns: &str,
    meta: Option<&PartialObjectMeta<Namespace>>,
) -> bool {
    if store.spec.conditions.is_empty() {
        return true;
    }
    if conditions_error(store).is_some() {
        return false;
    }
    let labels = meta
        .and_then(|m| m.metadata.labels.clone())
        .unwrap_or_default();
    store.spec.conditions.iter().any(|c| {
        c.namespaces.iter().any(|n| n == ns)
            || c.namespace_regexes
                .iter()
                .any(|re| crate::regexes::compile(re).is_ok_and(|re| re.is_match(ns)))
            || c.namespace_selector
                .as_ref()
                .is_some_and(|sel| super::selector_matches(sel, &labels))
    })
}

/// Where a store's provider would act as the operator itself rather than with credentials
/// the store names: `aws` or `kms.aws` without `auth` (the AWS SDK's default chain: env,
/// IRSA, Pod Identity, IMDS) and `kms.gcp` without `auth.secretRef` (Workload Identity, the
/// metadata server). Returns what it is, for messages, and the custom endpoint the identity
/// would be sent to, if the store names one.
pub fn ambient_identity(provider: &SecretStoreProvider) -> Option<(&'static str, Option<&str>)> {
    fn custom(e: &Option<String>) -> Option<&str> {
        e.as_deref().filter(|e| !e.trim().is_empty())
    }
    let kms = provider.kms.as_ref();
    let aws = [
        (
            "aws has no auth, so it would use the AWS SDK's default chain",
            provider.aws.as_ref().map(|a| &a.connection),
        ),
        (
            "kms.aws has no auth, so it would use the AWS SDK's default chain",
            kms.and_then(|k| k.aws.as_ref()).map(|a| &a.connection),
        ),
    ];
    for (what, connection) in aws {
        if let Some(aws) = connection.filter(|c| c.auth.is_none()) {
            return Some((what, custom(&aws.endpoint)));
        }
    }
    let gcp = kms?.gcp.as_ref()?;
    let has_key = gcp.auth.as_ref().is_some_and(|a| a.secret_ref.is_some());
    (!has_key).then_some((
        "kms.gcp has no auth.secretRef, so it would use Workload Identity",
        custom(&gcp.endpoint),
    ))
}

/// Refuses a SecretStore (made by a tenant) that would borrow the operator's own identity
/// ([`ambient_identity`]): always when it names a custom endpoint (a bearer token or a SigV4
/// request sent there could be replayed against the real service), and otherwise unless the
/// operator runs with `--allow-secret-store-ambient-identity`. ClusterSecretStores, made by
/// cluster admins, may use it. Errors are `InvalidConfig`.
pub fn check_identity(
    kind: StoreKind,
    provider: &SecretStoreProvider,
    allow_ambient: bool,
) -> Result<(), ProviderError> {
    if kind != StoreKind::SecretStore {
        return Ok(());
    }
    let Some((what, endpoint)) = ambient_identity(provider) else {
        return Ok(());
    };
    let message = match endpoint {
        Some(endpoint) => format!(
            "{what} (the operator's own identity), and the operator's identity is never sent to an endpoint a SecretStore names ({endpoint}); name credentials in auth"
        ),
        None if !allow_ambient => format!(
            "{what} (the operator's own identity), which a SecretStore may not use; name credentials in auth, use a ClusterSecretStore, or run the operator with --allow-secret-store-ambient-identity"
        ),
        None => return Ok(()),
    };
    Err(ProviderError::new(ErrorKind::InvalidConfig, message))
}

/// What is wrong with a ClusterSecretStore's `conditions`, if anything: a `namespaceSelector`
/// that is not a valid label selector (an unknown operator, `In` without values), or a
/// `namespaceRegexes` entry that is empty (it would match every namespace) or does not
/// compile. Such a store admits no namespace ([`namespace_allowed`]) and reports
/// `InvalidProviderConfig` with this message.
pub fn conditions_error(store: &ClusterSecretStore) -> Option<String> {
    use kube::core::Selector;
    for (i, c) in store.spec.conditions.iter().enumerate() {
        if let Some(sel) = &c.namespace_selector
            && let Err(e) = Selector::try_from(sel.clone())
        {
            return Some(format!(
                "spec.conditions[{i}].namespaceSelector is invalid, so the store admits no namespace: {e}"
            ));
        }
        for (j, re) in c.namespace_regexes.iter().enumerate() {
            let field = format!("spec.conditions[{i}].namespaceRegexes[{j}]");
            if re.is_empty() {
                return Some(format!(
                    "{field} is empty, which would match every namespace; the store admits no namespace (omit conditions to allow every namespace)"
                ));
            }
            if let Err(e) = crate::regexes::compile(re) {
                return Some(format!(
                    "{field} {re:?} is invalid, so the store admits no namespace: {e}"
                ));
            }
        }
    }
    None
}

#[derive(Clone)]
struct CachedProvider {
    provider: Arc<SharedProvider>,
    fingerprint: [u8; 32],
    built: Instant,
}

/// Providers, built once and shared. A store's provider is looked up by [`ProviderKey`]; a
/// new build is then matched by fingerprint (the provider configuration, the credential
/// material it read and, for `kms`, the namespace its documents are read in), so every store
/// with the same configuration and credentials (a SecretStore per namespace, a
/// ClusterSecretStore used from many namespaces) shares one [`SharedProvider`] with its
/// session, value cache and refresh ticks. A build reads the credentials first and logs in
/// only when no live provider has its fingerprint; concurrent builds of one key, and
/// concurrent logins of one fingerprint, coalesce: one login per distinct credential. An
/// entry is rebuilt after [`PROVIDER_TTL`] or an authentication failure.
///
/// Both maps are bounded moka caches whose entries expire after [`PROVIDER_TTL`]; a deleted
/// store or namespace drops its entries at once ([`ProviderCache::forget_store`],
/// [`ProviderCache::forget_namespace`]). A provider dropped by the cache is closed when its
/// last user is done with it (a Vault provider revokes its login).
///
/// A SecretStore that would use the operator's own identity is refused here, before any
/// build ([`check_identity`]).
pub struct ProviderCache {
    allow_ambient_identity: bool,
    allow_api_server_audience: bool,
    entries: moka::sync::Cache<ProviderKey, CachedProvider>,
    shared: moka::sync::Cache<[u8; 32], CachedProvider>,
    /// Builds per store key: credentials read, then a connect by fingerprint.
    builds: Coalescer<ProviderKey, Result<CachedProvider, ProviderError>>,
    /// Connects (logins) per fingerprint: stores resolving the same credentials at once
    /// share one.
    connects: Arc<Coalescer<[u8; 32], Result<CachedProvider, ProviderError>>>,
    /// UIDs of the live stores this process has reconciled at least once
    /// ([`ProviderCache::first_reconcile`]); a deleted store's is dropped with its providers.
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Store entries kept at most (a store per namespace, or a ClusterSecretStore per namespace it
/// serves, each one entry).
const PROVIDER_CAPACITY: u64 = 100_000;

impl Default for ProviderCache {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ProviderCache {
    /// An empty cache; `allow_ambient_identity` lets SecretStores use the operator's own
    /// identity (never with a custom endpoint), see [`check_identity`].
    pub fn new(allow_ambient_identity: bool) -> Self {
        fn cache<K>() -> moka::sync::Cache<K, CachedProvider>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
        {
            moka::sync::Cache::builder()
                .max_capacity(PROVIDER_CAPACITY)
                .time_to_live(PROVIDER_TTL)
                .support_invalidation_closures()
                .build()
        }
        ProviderCache {
            allow_ambient_identity,
            allow_api_server_audience: false,
            entries: cache(),
            shared: cache(),
            builds: Coalescer::default(),
            connects: Arc::default(),
            seen: Default::default(),
        }
    }

    /// This cache, letting SecretStores mint ServiceAccount tokens for an audience the API
    /// server accepts when `allow` (`--allow-api-server-audience`).
    pub fn allowing_api_server_audience(mut self, allow: bool) -> Self {
        self.allow_api_server_audience = allow;
        self
    }

    /// The provider of `store`, built if needed. Errors: the build's, or `InvalidConfig` from
    /// [`check_identity`].
    pub async fn get(&self, store: &ResolvedStore) -> Result<Arc<SharedProvider>, ProviderError> {
        check_identity(store.key.kind, &store.provider, self.allow_ambient_identity)?;
        if let Some(p) = self.cached(&store.key) {
            return Ok(p);
        }
        let spec = store.provider.clone();
        let auth = store
            .auth
            .clone()
            .allowing_api_server_audience(self.allow_api_server_audience);
        let (shared, connects) = (self.shared.clone(), self.connects.clone());
        let name = provider_name(&store.provider);
        let entry = self
            .builds
            .run(store.key.clone(), move || async move {
                // The credentials are read first; a provider built from the same
                // configuration and credentials is shared without a login of its own.
                auth.start_recording();
                let prepared = prepare_provider(&spec, &auth).await;
                let credentials = auth.finish_recording();
                let fingerprint = fingerprint(&spec, &auth.namespace, credentials);
                let prepared = prepared?;
                connects
                    .run(fingerprint, move || async move {
                        if let Some(e) = shared
                            .get(&fingerprint)
                            .filter(|e| e.built.elapsed() < PROVIDER_TTL)
                        {
                            return Ok(e);
                        }
                        let inner = prepared.connect().await?;
                        let entry = CachedProvider {
                            provider: Arc::new(SharedProvider::new(inner, name, fingerprint)),
                            fingerprint,
                            built: Instant::now(),
                        };
                        shared.insert(fingerprint, entry.clone());
                        Ok(entry)
                    })
                    .await
            })
            .await?;
        // Entries of older generations of the same store are dropped.
        let (uid, generation) = (store.key.uid.clone(), store.key.generation);
        let _ = self
            .entries
            .invalidate_entries_if(move |k, _| k.uid == uid && k.generation != generation);
        self.entries.insert(store.key.clone(), entry.clone());
        Ok(entry.provider)
    }

    fn cached(&self, key: &ProviderKey) -> Option<Arc<SharedProvider>> {
        // The entry's provider may be older than the entry: its own build time decides.
        self.entries
            .get(key)
            .filter(|e| e.built.elapsed() < PROVIDER_TTL)
            .map(|e| e.provider)
    }

    /// Drops the provider of `store`, for every store sharing it (after an authentication
    /// failure: credentials may have been rotated).
    pub fn invalidate(&self, store: &ResolvedStore) {
        if let Some(e) = self.entries.remove(&store.key) {
            self.shared.invalidate(&e.fingerprint);
        }
    }

    /// Drops the entries of a deleted store (by uid), and every shared provider no store
    /// entry refers to any more.
    pub fn forget_store(&self, uid: &str) {
        self.seen.lock().expect("seen lock").remove(uid);
        let uid = uid.to_string();
        let _ = self.entries.invalidate_entries_if(move |k, _| k.uid == uid);
        self.prune_shared();
    }

    /// Whether the store `uid` is reconciled for the first time in this process (and marks it
    /// reconciled).
    pub fn first_reconcile(&self, uid: &str) -> bool {
        self.seen.lock().expect("seen lock").insert(uid.to_string())
    }

    /// Drops the entries of ClusterSecretStores resolved in a deleted namespace, and every
    /// shared provider no store entry refers to any more.
    pub fn forget_namespace(&self, namespace: &str) {
        let ns = namespace.to_string();
        let _ = self
            .entries
            .invalidate_entries_if(move |k, _| k.ref_namespace == ns);
        self.prune_shared();
    }

    fn prune_shared(&self) {
        self.entries.run_pending_tasks();
        let used: std::collections::HashSet<[u8; 32]> =
            self.entries.iter().map(|(_, e)| e.fingerprint).collect();
        let _ = self
            .shared
            .invalidate_entries_if(move |f, _| !used.contains(f));
        self.shared.run_pending_tasks();
    }

    /// Number of distinct providers alive (for tests and metrics).
    pub fn distinct(&self) -> usize {
        self.shared.run_pending_tasks();
        self.shared.entry_count() as usize
    }
}

/// The provider label of metrics for a store's provider.
fn provider_name(spec: &SecretStoreProvider) -> &'static str {
    match (&spec.aws, &spec.vault) {
        (Some(aws), _) if aws.service == AwsService::SecretsManager => "aws_secretsmanager",
        (Some(_), _) => "aws_ssm",
        (None, Some(_)) => "vault",
        _ => "kms",
    }
}

/// Identity of a built provider: SHA-256 of its configuration (as JSON), the digest of the
/// credential material read while building it and, for `kms` (whose SOPS documents are read
/// in the ExternalSecret's namespace), that namespace.
fn fingerprint(spec: &SecretStoreProvider, namespace: &str, credentials: [u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    h.update([0]);
    if spec.kms.is_some() {
        h.update(namespace.as_bytes());
    }
    h.update([0]);
    h.update(credentials);
    h.finalize().into()
}

/// A backend whose credentials are read and which has not logged in yet.
enum Prepared {
    /// Nothing left to do (SSM and KMS make no login).
    Built(DynProvider),
    /// A Vault KV store: the login is left to [`Prepared::connect`].
    Vault(Box<PreparedVault>),
}

impl Prepared {
    /// Logs in where the backend needs it (Vault: one `login` call).
    async fn connect(self) -> Result<DynProvider, ProviderError> {
        Ok(match self {
            Prepared::Built(p) => p,
            Prepared::Vault(v) => Arc::new((*v).connect().await?),
        })
    }
}

/// Checks a store's configuration and reads its credentials (the material that makes its
/// fingerprint), leaving any login to [`Prepared::connect`].
async fn prepare_provider(
    spec: &SecretStoreProvider,
    auth: &AuthContext,
) -> Result<Prepared, ProviderError> {
    Ok(match (&spec.aws, &spec.vault, &spec.kms) {
        (Some(aws), None, None) => Prepared::Built(match aws.service {
            AwsService::ParameterStore => Arc::new(SsmProvider::new(aws, auth).await?),
            AwsService::SecretsManager => Arc::new(SecretsManagerProvider::new(aws, auth).await?),
        }),
        (None, Some(vault), None) => {
            Prepared::Vault(Box::new(VaultKvProvider::prepare(vault, auth).await?))
        }
        (None, None, Some(kms)) => Prepared::Built(Arc::new(KmsProvider::new(kms, auth).await?)),
        _ => {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "exactly one provider must be set: aws, vault or kms",
            ));
        }
    })
}

/// Whether a ClusterSecretStore has a reference without `namespace` (referent auth): such a
/// store can only be validated per ExternalSecret namespace.
fn has_referent_refs(provider: &SecretStoreProvider) -> bool {
    fn walk(v: &serde_json::Value, parent_key: &str) -> bool {
        match v {
            serde_json::Value::Object(map) => {
                let is_ref = parent_key.ends_with("Ref") || parent_key == "caProvider";
                (is_ref && map.contains_key("name") && !map.contains_key("namespace"))
                    || map.iter().any(|(k, v)| walk(v, k))
            }
            serde_json::Value::Array(items) => items.iter().any(|v| walk(v, parent_key)),
            _ => false,
        }
    }
    // Vault Kubernetes auth without a reference logs in as ServiceAccount `default` of the
    // ExternalSecret's namespace: referent too (for `vault` and `kms.vaultTransit` alike).
    let transit = provider.kms.as_ref().and_then(|k| k.vault_transit.as_ref());
    let vault_k8s_default_sa = [
        provider.vault.as_ref().map(|v| &v.connection),
        transit.map(|t| &t.connection),
    ]
    .into_iter()
    .flatten()
    .filter_map(|c| c.auth.kubernetes.as_ref())
    .any(|k| k.service_account_ref.is_none() && k.secret_ref.is_none());
    vault_k8s_default_sa || walk(&serde_json::to_value(provider).unwrap_or_default(), "")
}

/// Reconciles a `SecretStore`: build its provider (credentials, login) and validate it. Runs
/// in a `reconcile` span naming the store.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "SecretStore",
    namespace = %store.namespace().unwrap_or_default(),
    object = %store.name_any(),
))]
pub async fn reconcile_store(store: Arc<SecretStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let conditions = store.status.as_ref().map(|s| &s.conditions[..]);
    if valid_from_earlier_run(&ctx, store.meta(), conditions) {
        return Ok(requeue_store(store.spec.refresh_interval));
    }
    let ns = store.namespace().unwrap_or_default();
    let resolved = ResolvedStore::new(
        &ctx.client,
        StoreKind::SecretStore,
        &store.name_any(),
        &store.spec.provider,
        store.meta(),
        ns.clone(),
    );
    let verdict = validate(&resolved, &ctx).await;
    report(
        &Api::namespaced(ctx.client.clone(), &ns),
        &*store,
        store.status.as_ref().map(|s| &s.conditions[..]),
        store.spec.refresh_interval,
        verdict,
    )
    .await
}

/// Reconciles a `ClusterSecretStore`. A store whose references resolve per ExternalSecret
/// namespace (referent auth) is checked for shape only; it is validated when used. Runs in a
/// `reconcile` span naming the store.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "ClusterSecretStore",
    object = %store.name_any(),
))]
pub async fn reconcile_cluster_store(
    store: Arc<ClusterSecretStore>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let conditions = store.status.as_ref().map(|s| &s.conditions[..]);
    if valid_from_earlier_run(&ctx, store.meta(), conditions) {
        return Ok(requeue_store(store.spec.refresh_interval));
    }
    let verdict = if let Some(e) = conditions_error(&store) {
        (false, "InvalidProviderConfig", e)
    } else if has_referent_refs(&store.spec.provider) {
        (
            true,
            "Valid",
            "store uses referent authentication: credentials are resolved and validated in each ExternalSecret's namespace".to_string(),
        )
    } else {
        let resolved = ResolvedStore::new(
            &ctx.client,
            StoreKind::ClusterSecretStore,
            &store.name_any(),
            &store.spec.provider,
            store.meta(),
            String::new(),
        );
        validate(&resolved, &ctx).await
    };
    report(
        &Api::all(ctx.client.clone()),
        &*store,
        store.status.as_ref().map(|s| &s.conditions[..]),
        store.spec.refresh_interval,
        verdict,
    )
    .await
}

async fn validate(store: &ResolvedStore, ctx: &Context) -> (bool, &'static str, String) {
    match ctx.providers.get(store).await {
        Err(e) => (false, "InvalidProviderConfig", e.message),
        Ok(p) => match p.validate().await {
            Ok(()) => (true, "Valid", "store validated".to_string()),
            Err(e) => {
                if e.kind == ErrorKind::Authentication {
                    ctx.providers.invalidate(store);
                }
                (false, "ValidationFailed", e.message)
            }
        },
    }
}

fn requeue_store(interval: Option<i64>) -> Action {
    match interval.unwrap_or(DEFAULT_STORE_REFRESH_SECS) {
        0 => Action::await_change(),
        s => Action::requeue(Duration::from_secs(s.max(1) as u64)),
    }
}

/// Whether this is the first reconcile of a store in this process and its `Ready` condition,
/// written by an earlier run, already says `Valid` for its current generation. A restart (an
/// upgrade) then trusts that verdict until the store's next periodic check instead of calling
/// every store's provider at once; a store whose spec changed meanwhile (a new generation) is
/// checked at once, and ExternalSecrets report a provider that fails when they use it.
fn valid_from_earlier_run(
    ctx: &Context,
    meta: &ObjectMeta,
    conditions: Option<&[Condition]>,
) -> bool {
    let first = ctx
        .providers
        .first_reconcile(meta.uid.as_deref().unwrap_or_default());
    first
        && conditions.into_iter().flatten().any(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.reason == "Valid"
                && c.observed_generation == meta.generation
        })
}

/// Writes a store's verdict `(ready, reason, message)` as its `Ready` condition (no write
/// when it is unchanged) and requeues it for its `refreshInterval` (seconds).
async fn report<K>(
    api: &Api<K>,
    store: &K,
    previous: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    refresh_interval: Option<i64>,
    (ready, reason, message): (bool, &'static str, String),
) -> Result<Action, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let generation = store.meta().generation;
    let cond = condition::ready(previous, ready, reason, &message, generation);
    let unchanged = previous
        .and_then(|p| p.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c == &cond);
    if !unchanged {
        let patch = json!({ "status": { "conditions": [cond], "observedGeneration": generation } });
        api.patch_status(
            &store.name_any(),
            &super::merge_params(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Kube)?;
    }
    Ok(requeue_store(refresh_interval))
}

#[cfg(test)]
#[path = "secret_store_tests.rs"]
mod tests;
