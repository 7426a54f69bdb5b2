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
