//! AWS KMS: the `aws` key service of the [KMS provider](crate::providers::kms::KmsProvider).
//! It `Decrypt`s raw ciphertext and SOPS data keys, with credentials resolved as for the
//! Parameter Store provider ([`super::credentials`]); calls are counted as `aws_kms`.

use std::collections::BTreeMap;

use aws_sdk_kms::{operation::decrypt::DecryptError, primitives::Blob};

use super::{
    credentials::{assume_role, sdk_config},
    errors::{CountCalls, call_error},
};
use crate::{
    api::secret_store::KmsAws,
    providers::{AuthContext, ErrorKind, ProviderError, SecretValue},
};

const PROVIDER_AWS: &str = "aws_kms";

/// Roles of SOPS `kms` entries whose clients a store keeps: a document names its role, so the
/// number is bounded for a tenant's documents (the least recently used client is dropped).
const ROLE_CLIENTS: u64 = 16;

/// The `aws` key service of a store: a KMS client, an STS client signed with the same
/// credentials (for `GetCallerIdentity`), the encryption context of raw ciphertext, and KMS
/// clients for the roles SOPS entries name.
pub(crate) struct AwsKms {
    /// Boxed: the SDK configuration is some 500 bytes, the other key services' a tenth.
    config: Box<aws_config::SdkConfig>,
    kms: aws_sdk_kms::Client,
    sts: aws_sdk_sts::Client,
    pub(crate) context: BTreeMap<String, String>,
    roles: moka::sync::Cache<String, aws_sdk_kms::Client>,
}

pub(crate) async fn aws_backend(
    spec: &KmsAws,
    auth: &AuthContext,
) -> Result<AwsKms, ProviderError> {
    if spec.connection.region.trim().is_empty() {
        return Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            "kms: aws.region is required",
        ));
    }
    let config = sdk_config(&spec.connection, auth, PROVIDER_AWS).await?;
    Ok(AwsKms {
        kms: aws_sdk_kms::Client::new(&config),
        sts: aws_sdk_sts::Client::new(&config),
        config: Box::new(config),
        context: spec.encryption_context.clone(),
        roles: moka::sync::Cache::new(ROLE_CLIENTS),
    })
}

/// AWS KMS `Decrypt` of `blob` (one call). `key_id`: the key ARN a SOPS entry names; `role`:
/// the IAM role it names, assumed with the store's credentials first (STS `AssumeRole`,
/// counted as `aws_kms` calls; its failure is the error).
pub(crate) async fn aws_decrypt(
    backend: &AwsKms,
    blob: Vec<u8>,
    context: BTreeMap<String, String>,
    key_id: Option<String>,
    role: Option<String>,
) -> Result<SecretValue, ProviderError> {
    let kms = match role {
        None => backend.kms.clone(),
        Some(role) => backend.roles.get_with(role.clone(), || {
            aws_sdk_kms::Client::new(&assume_role(&backend.config, &role, PROVIDER_AWS))
        }),
    };
    let out = kms
        .decrypt()
        .ciphertext_blob(Blob::new(blob))
        .set_encryption_context((!context.is_empty()).then(|| context.into_iter().collect()))
        .set_key_id(key_id)
        .customize()
        .interceptor(CountCalls::<DecryptError>::for_provider(
            PROVIDER_AWS,
            "Decrypt",
            false,
        ))
        .send()
        .await
        .map_err(|e| {
            let mut failure = call_error(e, false);
            let code = failure.detail.split(':').next().unwrap_or_default();
            failure.kind = match code {
                "InvalidCiphertextException" | "IncorrectKeyException" => ErrorKind::InvalidData,
                "NotFoundException" => ErrorKind::NotFound,
                "DisabledException" | "KMSInvalidStateException" | "InvalidKeyUsageException" => {
                    ErrorKind::InvalidConfig
                }
                _ => failure.kind,
            };
            failure.provider_error("kms", "Decrypt", None)
        })?;
    let plaintext = out.plaintext.map(Blob::into_inner).unwrap_or_default();
    Ok(SecretValue::new(plaintext))
}

/// Proves the store's credentials: STS `GetCallerIdentity` (which needs no IAM permission).
pub(crate) async fn aws_validate(backend: &AwsKms) -> Result<(), ProviderError> {
    let AwsKms { sts, .. } = backend;
    sts.get_caller_identity()
        .customize()
        .interceptor(CountCalls::<
            aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError,
        >::for_provider(
            PROVIDER_AWS, "GetCallerIdentity", true
        ))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| call_error(e, true).provider_error("sts", "GetCallerIdentity", None))
}
