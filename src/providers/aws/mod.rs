//! Amazon Web Services: the Parameter Store provider ([`SsmProvider`]) and the AWS KMS key
//! service of the KMS provider (`kms`), and what they share: the SDK configuration with its
//! credentials ([`credentials`]), and the classification and counting of calls (`errors`).

pub mod credentials;
pub(crate) mod errors;
pub(crate) mod kms;
pub mod ssm;
mod ssm_batch;

pub use ssm::SsmProvider;
