//! Prometheus metrics (prometheus-client). Each component's metrics are process-wide statics,
//! registered once into the admin server's registry by [`register`].
//!
//! Labels are bounded: provider, operation, outcome, result and reason come from fixed sets;
//! there is no per-object label.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `secret_relay_provider_calls_total` | counter | provider, operation, outcome |
//! | `secret_relay_provider_call_duration_seconds` | histogram | provider, outcome |
//! | `secret_relay_syncs_total` | counter | result (`success`/`error`), reason |
//! | `secret_relay_reconcile_duration_seconds` | histogram | — |
//! | `secret_relay_externalsecrets` | gauge | ready (`True`/`False`/`Unknown`) |
//! | `secret_relay_secretstores` | gauge | kind (`SecretStore`/`ClusterSecretStore`), ready |
//! | `secret_relay_leader` | gauge | — |
//! | `secret_relay_build_info` | gauge (1) | version |
//!
//! The chart's Grafana dashboard and alerting rules (`charts/secret-relay/dashboards/`,
//! `templates/prometheusrule.yaml`) name these; `tests/observability.rs` fails when one they
//! name is missing from `/metrics`.

use std::sync::{LazyLock, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of [`PROVIDER_CALLS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// `aws_ssm`, `vault`, `aws_kms`, ...
    pub provider: &'static str,
    /// The API action: `GetParameters`, `GetParametersByPath`, `kv_read`, `login`, ...
    pub operation: &'static str,
    /// `ok` or an `ErrorKind` name.
    pub outcome: &'static str,
}

/// Calls made to provider APIs, one per HTTP request sent.
pub static PROVIDER_CALLS: LazyLock<Family<ProviderCallLabels, Counter>> =
    LazyLock::new(Family::default);

/// Labels of [`PROVIDER_CALL_DURATION`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderOutcomeLabels {
    /// As in [`ProviderCallLabels`].
    pub provider: &'static str,
    /// As in [`ProviderCallLabels`].
    pub outcome: &'static str,
}

/// Buckets of [`PROVIDER_CALL_DURATION`]: 5 ms … ~20 s (the longest call timeout is 20 s).
fn provider_call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Histograms by provider and outcome, each with [`provider_call_histogram`]'s buckets.
pub type ProviderHistograms = Family<ProviderOutcomeLabels, Histogram, fn() -> Histogram>;

/// Duration of provider API calls in seconds, from the request sent to the answer (or the
/// failure), by provider and outcome: the calls of [`PROVIDER_CALLS`] whose start is known
/// (every AWS, Vault and Cloud KMS request; not Cloud KMS token fetches).
pub static PROVIDER_CALL_DURATION: LazyLock<ProviderHistograms> =
    LazyLock::new(|| Family::new_with_constructor(provider_call_histogram));

/// Labels of [`PROVIDER_READS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderReadLabels {
    /// `aws_ssm`, `vault` or `kms`.
    pub provider: &'static str,
    /// `call` (this read started a backend call) or `cache` (served by the value cache, or by
    /// joining a call already in flight).
    pub source: &'static str,
}

/// Remote values read by ExternalSecret syncs (one per remote key per sync), by provider
/// and by whether they cost a backend call: the provider economy's hit ratio.
pub static PROVIDER_READS: LazyLock<Family<ProviderReadLabels, Counter>> =
    LazyLock::new(Family::default);

/// Labels of [`SYNCS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `success` or `error`.
    pub result: &'static str,
    /// The condition reason on success (`SecretSynced`, `SecretDeleted`), the error category
    /// on failure (`NotFound`, `StoreNotReady`, `InvalidSpec`, ...).
    pub reason: &'static str,
}

/// ExternalSecret syncs that fetched from a provider (a reconcile with nothing due is not a
/// sync), by result and reason.
pub static SYNCS: LazyLock<Family<SyncLabels, Counter>> = LazyLock::new(Family::default);

/// Duration of every ExternalSecret reconcile, in seconds (buckets 1 ms … ~16 s).
pub static RECONCILE_DURATION: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.001, 2.0, 15)));

/// Counts, at scrape time, the ExternalSecrets whose Ready condition is `True`, `False` and
/// unknown, in that order; set by the controller when its watch starts (metrics know nothing
/// of the controller's types: the controller registers what it owns).
type ReadyCounts = Box<dyn Fn() -> [i64; 3] + Send + Sync>;
static EXTERNAL_SECRETS: RwLock<Option<ReadyCounts>> = RwLock::new(None);

/// Counts, at scrape time, the SecretStores and the ClusterSecretStores (in that order) whose
/// Ready condition is `True`, `False` and unknown; set by the controller like
/// [`watch_external_secrets`].
type StoreCounts = Box<dyn Fn() -> [[i64; 3]; 2] + Send + Sync>;
static STORES: RwLock<Option<StoreCounts>> = RwLock::new(None);

/// Sets what the `secret_relay_secretstores` gauge reports on each scrape: `counts` returns,
/// for SecretStores then ClusterSecretStores, those whose Ready condition is `True`, `False`
/// and unknown.
pub fn watch_stores(counts: impl Fn() -> [[i64; 3]; 2] + Send + Sync + 'static) {
    *STORES.write().expect("metrics lock") = Some(Box::new(counts));
}

/// 1 while this process runs the controllers (it holds the Lease, or runs without leader
/// election), 0 while it waits for the Lease as a standby. Summed over a release's replicas:
/// how many lead (1 when all is well; the chart's `SecretRelayNoLeader` alert fires on 0).
pub static LEADER: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// Sets [`LEADER`]: whether this process runs the controllers.
pub fn set_leader(leading: bool) {
    LEADER.set(i64::from(leading));
}

/// Shared providers whose backend is not answering (see `providers::health`), by provider.
pub static PROVIDERS_DOWN: LazyLock<Family<ProviderLabels, Gauge>> = LazyLock::new(Family::default);

/// Labels of [`PROVIDERS_DOWN`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// `aws_ssm`, `vault` or `kms`.
    pub provider: &'static str,
}

/// Shared providers down, all providers together (for `/readyz`).
static PROVIDERS_DOWN_TOTAL: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Adds `delta` (1 or -1) to the providers of `provider` that are down.
pub fn provider_down(provider: &'static str, delta: i64) {
    PROVIDERS_DOWN
        .get_or_create(&ProviderLabels { provider })
        .inc_by(delta);
    PROVIDERS_DOWN_TOTAL.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
}

/// Shared providers whose backend is down, all providers together.
pub fn providers_down() -> i64 {
    PROVIDERS_DOWN_TOTAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// 1 while the Kubernetes API server answers the operator's watches, 0 from a watch error
/// until a watch gets an answer again.
pub static KUBE_API_UP: LazyLock<Gauge> = LazyLock::new(|| {
    let up = Gauge::default();
    up.set(1);
    up
});

/// Records a watch's outcome: an event means the API server answers; an error, that it
/// does not (the watch retries with backoff).
pub fn kube_api_observed(answered: bool) {
    KUBE_API_UP.set(i64::from(answered));
}

/// Whether the API server answered the last watch request (see [`KUBE_API_UP`]).
pub fn kube_api_up() -> bool {
    KUBE_API_UP.get() == 1
}

/// Counts one provider API call.
pub fn provider_call(provider: &'static str, operation: &'static str, outcome: &'static str) {
    PROVIDER_CALLS
        .get_or_create(&ProviderCallLabels {
            provider,
            operation,
            outcome,
        })
        .inc();
}

/// Counts one provider API call that took `elapsed`, and records its duration.
pub fn provider_call_timed(
    provider: &'static str,
    operation: &'static str,
    outcome: &'static str,
    elapsed: std::time::Duration,
) {
    provider_call(provider, operation, outcome);
    PROVIDER_CALL_DURATION
        .get_or_create(&ProviderOutcomeLabels { provider, outcome })
        .observe(elapsed.as_secs_f64());
}

/// Counts one remote value read (see [`PROVIDER_READS`]).
pub fn provider_read(provider: &'static str, source: &'static str) {
    PROVIDER_READS
        .get_or_create(&ProviderReadLabels { provider, source })
        .inc();
}

/// Labels of [`ROLLOUT_RESTARTS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `Deployment`, `StatefulSet`, `DaemonSet` or `argoproj.io/Rollout`.
    pub kind: &'static str,
}

/// Workloads restarted because a Secret they read changed (`rolloutRestartTargets`), by kind.
pub static ROLLOUT_RESTARTS: LazyLock<Family<RolloutLabels, Counter>> =
    LazyLock::new(Family::default);

/// Counts one rollout restart of a workload of `kind`.
pub fn rollout_restart(kind: &'static str) {
    ROLLOUT_RESTARTS
        .get_or_create(&RolloutLabels { kind })
        .inc();
}

/// Rollout restarts of `kind` so far (for tests).
pub fn rollout_restarts_total(kind: &'static str) -> u64 {
    ROLLOUT_RESTARTS
        .get_or_create(&RolloutLabels { kind })
        .get()
}

/// Counts one sync.
pub fn sync(result: &'static str, reason: &'static str) {
    SYNCS.get_or_create(&SyncLabels { result, reason }).inc();
}

/// Sets what the `secret_relay_externalsecrets` gauge reports on each scrape: `counts`
/// returns the ExternalSecrets whose Ready condition is `True`, `False` and unknown.
pub fn watch_external_secrets(counts: impl Fn() -> [i64; 3] + Send + Sync + 'static) {
    *EXTERNAL_SECRETS.write().expect("metrics lock") = Some(Box::new(counts));
}

/// A certificate's notAfter as `secret_relay_certificate_expiration_timestamp_seconds`
/// reports it: the ExternalSecret's namespace and name, the generator's name, Unix seconds.
/// (Its labels are `externalsecret_namespace`, `externalsecret` and `generator`: a
/// `namespace` label would be renamed `exported_namespace` by a scrape that adds the Pod's.)
pub type CertificateExpiry = (String, String, String, i64);
type CertificateExpiries = Box<dyn Fn() -> Vec<CertificateExpiry> + Send + Sync>;
static CERTIFICATES: RwLock<Option<CertificateExpiries>> = RwLock::new(None);

/// Sets what `secret_relay_certificate_expiration_timestamp_seconds` reports on each scrape:
/// `expiries` returns, per ExternalSecret generator whose values hold an X.509 certificate
/// (`status.generators[].notAfter`), its notAfter.
pub fn watch_certificates(expiries: impl Fn() -> Vec<CertificateExpiry> + Send + Sync + 'static) {
    *CERTIFICATES.write().expect("metrics lock") = Some(Box::new(expiries));
}

/// Reconcile requests waiting for a slot in the controller's queue, and admitted to it but
/// not started, at scrape time.
type RequestCounts = Box<dyn Fn() -> (usize, usize) + Send + Sync>;
static RECONCILE_REQUESTS: RwLock<Option<RequestCounts>> = RwLock::new(None);

/// Sets what `secret_relay_reconcile_requests` reports on each scrape: `counts` returns the
/// requests waiting and admitted (the controller's trigger gate).
pub fn watch_reconcile_requests(counts: impl Fn() -> (usize, usize) + Send + Sync + 'static) {
    *RECONCILE_REQUESTS.write().expect("metrics lock") = Some(Box::new(counts));
}

/// Reconcile requests waiting and admitted now (as `secret_relay_reconcile_requests`), for
/// tests; `(0, 0)` before a controller registers.
pub fn reconcile_requests() -> (usize, usize) {
    RECONCILE_REQUESTS
        .read()
        .expect("metrics lock")
        .as_ref()
        .map_or((0, 0), |counts| counts())
}

/// Sum of calls of `provider`/`operation` over all outcomes (for tests and the benchmark).
pub fn provider_calls_total(provider: &'static str, operation: &'static str) -> u64 {
    [
        "ok",
        "NotFound",
        "AccessDenied",
        "Authentication",
        "InvalidConfig",
        "InvalidData",
        "Throttled",
        "Transient",
    ]
    .iter()
    .map(|outcome| {
        PROVIDER_CALLS
            .get_or_create(&ProviderCallLabels {
                provider,
                operation,
                outcome,
            })
            .get()
    })
    .sum()
}

/// Counts cached ExternalSecrets by their Ready condition on each scrape.
#[derive(Debug)]
struct ReadyCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabels {
    ready: &'static str,
}

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = EXTERNAL_SECRETS
            .read()
            .expect("metrics lock")
            .as_ref()
            .map_or([0; 3], |counts| counts());
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "secret_relay_externalsecrets",
            "ExternalSecrets by the status of their Ready condition",
            None,
            gauge.metric_type(),
        )?;
        for (ready, n) in ["True", "False", "Unknown"].into_iter().zip(counts) {
            ConstGauge::new(n).encode(family.encode_family(&ReadyLabels { ready })?)?;
        }
        let (waiting, admitted) = RECONCILE_REQUESTS
            .read()
            .expect("metrics lock")
            .as_ref()
            .map_or((0, 0), |counts| counts());
        let mut family = encoder.encode_descriptor(
            "secret_relay_reconcile_requests",
            "ExternalSecret reconcile requests waiting for a slot in the controller's queue, and admitted to it but not started",
            None,
            gauge.metric_type(),
        )?;
        for (state, n) in [("waiting", waiting), ("admitted", admitted)] {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            ConstGauge::new(n).encode(family.encode_family(&StateLabels { state })?)?;
        }
        let stores = STORES
            .read()
            .expect("metrics lock")
            .as_ref()
            .map_or([[0; 3]; 2], |counts| counts());
        let mut family = encoder.encode_descriptor(
            "secret_relay_secretstores",
            "SecretStores and ClusterSecretStores by kind and the status of their Ready condition",
            None,
            gauge.metric_type(),
        )?;
        for (kind, counts) in ["SecretStore", "ClusterSecretStore"]
            .into_iter()
            .zip(stores)
        {
            for (ready, n) in ["True", "False", "Unknown"].into_iter().zip(counts) {
                ConstGauge::new(n).encode(family.encode_family(&StoreLabels { kind, ready })?)?;
            }
        }
        let certificates = CERTIFICATES
            .read()
            .expect("metrics lock")
            .as_ref()
            .map_or_else(Vec::new, |expiries| expiries());
        let mut family = encoder.encode_descriptor(
            "secret_relay_certificate_expiration_timestamp_seconds",
            "The notAfter (Unix seconds) of the certificate a generator of an ExternalSecret issued (a Vault PKI certificate), by the ExternalSecret's namespace and name and the generator's name",
            None,
            gauge.metric_type(),
        )?;
        for (externalsecret_namespace, externalsecret, generator, not_after) in certificates {
            let labels = CertificateLabels {
                externalsecret_namespace,
                externalsecret,
                generator,
            };
            ConstGauge::new(not_after).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    kind: &'static str,
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    externalsecret_namespace: String,
    externalsecret: String,
    generator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Registers every metric of the process into `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "secret_relay_provider_calls",
        "Provider API calls by provider, operation and outcome",
        PROVIDER_CALLS.clone(),
    );
    registry.register(
        "secret_relay_provider_call_duration_seconds",
        "Duration of provider API calls in seconds, by provider and outcome",
        PROVIDER_CALL_DURATION.clone(),
    );
    registry.register(
        "secret_relay_provider_reads",
        "Remote values read by ExternalSecret syncs, by provider and source (call or cache)",
        PROVIDER_READS.clone(),
    );
    registry.register(
        "secret_relay_syncs",
        "ExternalSecret syncs by result and reason",
        SYNCS.clone(),
    );
    registry.register(
        "secret_relay_reconcile_duration_seconds",
        "Duration of ExternalSecret reconciles in seconds",
        RECONCILE_DURATION.clone(),
    );
    registry.register(
        "secret_relay_rollout_restarts",
        "Workloads restarted (pod template annotation) because a Secret they read changed, by kind",
        ROLLOUT_RESTARTS.clone(),
    );
    registry.register(
        "secret_relay_providers_down",
        "Shared providers whose backend is not answering (a call failed as unreachable and no answer came since), by provider",
        PROVIDERS_DOWN.clone(),
    );
    registry.register(
        "secret_relay_kube_api_up",
        "1 while the Kubernetes API server answers the operator's watches, 0 from a watch error until an answer",
        KUBE_API_UP.clone(),
    );
    registry.register(
        "secret_relay_leader",
        "1 while this process runs the controllers (holds the Lease, or runs without leader election), 0 while it waits for the Lease",
        LEADER.clone(),
    );
    registry.register_collector(Box::new(ReadyCollector));
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "secret_relay_build_info",
        "Build information; the value is always 1",
        build_info,
    );
}
