//! Vault Transit: the `vaultTransit` key service of the [KMS
//! provider](crate::providers::kms::KmsProvider), a Vault login made as the KV provider makes
//! it, and `decrypt` calls with it.

use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::bounded;
use super::{VaultKvProvider, client::normalize_mount, errors::kv_error};
use crate::{
    api::secret_store::{KmsVaultTransit, VaultKvVersion},
    providers::{AuthContext, ErrorKind, ProviderError, SecretValue},
};

/// The `vaultTransit` key service of a store: its Vault login, the Transit mount and the key
/// of raw ciphertext.
pub(crate) struct Transit {
    pub(crate) vault: Box<VaultKvProvider>,
    pub(crate) path: String,
    pub(crate) key_name: Option<String>,
}

pub(crate) async fn transit_backend(
    spec: &KmsVaultTransit,
    auth: &AuthContext,
) -> Result<Transit, ProviderError> {
    // The client's own mount is the Transit mount: it is checked here, and KV reads are
    // never made with this client.
    let vault = VaultKvProvider::connect(&spec.connection, &spec.path, VaultKvVersion::V2, auth);
    Ok(Transit {
        vault: Box::new(vault.await?),
        path: spec.path.clone(),
        key_name: spec.key_name.clone().filter(|k| !k.is_empty()),
    })
}

impl VaultKvProvider {
    /// Decrypts a Transit ciphertext (`vault:v1:...`): `POST /v1/<mount>/decrypt/<key>`, one
    /// `transit_decrypt` call. Returns the plaintext bytes (Vault's base64 decoded).
    ///
    /// Errors: `InvalidData` when Vault refuses the ciphertext (400: wrong key, tampered or
    /// malformed ciphertext), `AccessDenied` (403), `NotFound` (404: no such mount),
    /// `Transient` otherwise. Messages carry Vault's error text, never the plaintext.
    pub async fn transit_decrypt(
        &self,
        mount: &str,
        key_name: &str,
        ciphertext: &str,
    ) -> Result<SecretValue, ProviderError> {
        let mount: Arc<str> = normalize_mount(mount)?.into();
        let key: Arc<str> = key_name.into();
        let ciphertext: Arc<str> = ciphertext.trim().into();
        let result = self
            .call("transit_decrypt", |client| {
                let (mount, key, ciphertext) = (mount.clone(), key.clone(), ciphertext.clone());
                async move {
                    bounded::transit_decrypt(client.as_ref(), &mount, &key, &ciphertext)
                    .await
                }
            })
            .await?;
        let shown = format!("{mount}/decrypt/{key}");
        let response = result.map_err(|e| kv_error("transit_decrypt", &e, &shown, "decrypt"))?;
        let encoded = Zeroizing::new(response.plaintext);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(SecretValue::new)
            .map_err(|_| {
                ProviderError::new(
                    ErrorKind::InvalidData,
                    format!("vault: decrypt {shown}: the plaintext is not base64"),
                )
            })
    }
}
