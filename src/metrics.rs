//! Prometheus metrics (prometheus-client). Each component's metrics are process-wide statics,
//! registered once into the admin server's registry by [`register`].
//!
//! Labels are bounded: provider, operation, outcome and reason come from fixed sets; no
//! per-object labels.

use std::sync::LazyLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Labels of [`PROVIDER_CALLS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// `aws_ssm`, `vault`, ...
    pub provider: &'static str,
    /// The API action: `GetParameters`, `GetParametersByPath`, `kv_read`, `login`, ...
    pub operation: &'static str,
    /// `ok` or an `ErrorKind` name.
    pub outcome: &'static str,
}

/// Calls made to provider APIs, one per HTTP request sent.
pub static PROVIDER_CALLS: LazyLock<Family<ProviderCallLabels, Counter>> =
    LazyLock::new(Family::default);

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

/// Sum of calls of `provider`/`operation` over all outcomes (for tests and the benchmark).
pub fn provider_calls_total(provider: &'static str, operation: &'static str) -> u64 {
    [
        "ok",
        "NotFound",
        "AccessDenied",
        "Authentication",
        "InvalidConfig",
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

/// Registers every metric of the process into `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "secret_relay_provider_calls",
        "Provider API calls by provider, operation and outcome",
        PROVIDER_CALLS.clone(),
    );
}
