//! Amazon Web Services: the Parameter Store provider ([`SsmProvider`]), the Secrets Manager
//! provider ([`SecretsManagerProvider`]), the AWS KMS key service of the KMS provider (`kms`),
//! and what they share: the SDK configuration with its credentials ([`credentials`]), the
//! request batcher of batched reads (`batcher`), and the classification and counting of calls
//! (`errors`).

mod batcher;
pub mod credentials;
pub(crate) mod errors;
pub(crate) mod kms;
pub mod secrets_manager;
pub mod ssm;
mod ssm_batch;

pub use secrets_manager::SecretsManagerProvider;
pub use ssm::SsmProvider;

/// Tags as ESO's `metadataPolicy: Fetch` gives them: a JSON object of strings.
pub(crate) fn tags_json(
    tags: impl IntoIterator<Item = (String, String)>,
) -> crate::providers::SecretValue {
    let map: serde_json::Map<String, serde_json::Value> = tags
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    crate::providers::SecretValue::new(
        serde_json::to_vec(&map).expect("a map of strings serializes"),
    )
}
