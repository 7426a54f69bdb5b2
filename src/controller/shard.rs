//! Shards: an instance reconciles the ExternalSecrets and ClusterExternalSecrets whose labels
//! match its `--watch-label-selector` ([`super::Config::watch_label_selector`]), as Flux
//! shards its controllers (docs/sharding.md).

use kube::Client;

use crate::api::ExternalSecret;

/// The label that conventionally assigns an ExternalSecret (or ClusterExternalSecret) to a
/// shard: instances select `secret-relay.dev/shard=<name>`, the main one
/// `!secret-relay.dev/shard` ([`super::Config::watch_label_selector`]; docs/sharding.md).
pub const LABEL_SHARD: &str = "secret-relay.dev/shard";

/// Refuses a `--watch-label-selector` the API server cannot parse (HTTP 400 on a one-item
/// list of the ExternalSecrets this instance watches), with the API server's message; other
/// failures are left to the watches' retries.
pub(super) async fn check_selector(
    client: &Client,
    namespace: &Option<String>,
    selector: &str,
) -> anyhow::Result<()> {
    let list = super::api_for::<ExternalSecret>(client, namespace)
        .list_metadata(&kube::api::ListParams::default().labels(selector).limit(1))
        .await;
    match list {
        Err(kube::Error::Api(s)) if s.code == 400 => Err(anyhow::anyhow!(
            "invalid --watch-label-selector {selector:?}: {}",
            s.message
        )),
        _ => Ok(()),
    }
}
