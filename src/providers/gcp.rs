//! Google Cloud KMS: the `gcp` key service of the [KMS provider](super::kms::KmsProvider).
//! OAuth tokens come from a service-account key JSON or the metadata server (Workload
//! Identity); `decrypt` is one REST call. Calls are counted as `gcp_kms`.

use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{AuthContext, ErrorKind, ProviderError, SecretValue};
use crate::api::secret_store::KmsGcp;

/// Google Cloud KMS REST endpoint.
pub const GCP_KMS_ENDPOINT: &str = "https://cloudkms.googleapis.com";
/// OAuth scope of Cloud KMS.
pub const GCP_KMS_SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

const PROVIDER_GCP: &str = "gcp_kms";

/// The `gcp` key service of a store: an HTTP client, the Cloud KMS endpoint, the key of raw
/// ciphertext and the OAuth token provider.
pub(crate) struct GcpKms {
    http: reqwest::Client,
    endpoint: String,
    pub(crate) key_name: Option<String>,
    tokens: Arc<dyn gcp_auth::TokenProvider>,
}

pub(crate) async fn gcp_backend(
    spec: &KmsGcp,
    auth: &AuthContext,
) -> Result<GcpKms, ProviderError> {
    let tokens: Arc<dyn gcp_auth::TokenProvider> = match spec.auth.as_ref() {
        Some(a) if a.secret_ref.is_some() => {
            let sel = a.secret_ref.as_ref().expect("checked");
            let json = auth.secret_value(sel).await?;
            let json = Zeroizing::new(
                json.as_str()
                    .ok_or_else(|| {
                        ProviderError::new(
                            ErrorKind::Authentication,
                            "gcp: the service-account key is not UTF-8 text",
                        )
                    })?
                    .to_string(),
            );
            let account = gcp_auth::CustomServiceAccount::from_json(&json).map_err(|e| {
                ProviderError::new(
                    ErrorKind::Authentication,
                    format!("gcp: the service-account key JSON cannot be used: {e}"),
                )
            })?;
            Arc::new(account)
        }
        _ => Arc::new(gcp_auth::MetadataServiceAccount::new().await.map_err(|e| {
            ProviderError::new(
                ErrorKind::Authentication,
                format!("gcp: Workload Identity (metadata server): {e}"),
            )
        })?),
    };
    let endpoint = spec
        .endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .unwrap_or(GCP_KMS_ENDPOINT)
        .trim_end_matches('/')
        .to_string();
    url::Url::parse(&endpoint).map_err(|e| {
        ProviderError::new(
            ErrorKind::InvalidConfig,
            format!("kms: gcp.endpoint {endpoint:?}: {e}"),
        )
    })?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| {
            ProviderError::new(ErrorKind::InvalidConfig, format!("gcp: HTTP client: {e}"))
        })?;
    Ok(GcpKms {
        http,
        endpoint,
        key_name: spec.key_name.clone(),
        tokens,
    })
}

/// Cloud KMS `projects.locations.keyRings.cryptoKeys.decrypt`: `POST
/// <endpoint>/v1/<name>:decrypt {"ciphertext": <base64>}` with a bearer token, answering
/// `{"plaintext": <base64>}` (one `decrypt` call).
pub(crate) async fn gcp_decrypt(
    backend: &GcpKms,
    name: &str,
    ciphertext_b64: &str,
) -> Result<SecretValue, ProviderError> {
    let GcpKms {
        http,
        endpoint,
        tokens,
        ..
    } = backend;
    let valid_name = name.starts_with("projects/")
        && name.contains("/cryptoKeys/")
        && !name.contains(['?', '#', ' ']);
    if !valid_name {
        return Err(ProviderError::new(
            ErrorKind::InvalidConfig,
            format!(
                "gcp kms: key name {name:?} is not projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>"
            ),
        ));
    }
    let token = oauth_token(tokens.as_ref()).await.inspect_err(|e| {
        crate::metrics::provider_call(PROVIDER_GCP, "token", e.kind.into());
    })?;
    let url = format!("{endpoint}/v1/{name}:decrypt");
    let body = serde_json::json!({ "ciphertext": ciphertext_b64 });
    let started = std::time::Instant::now();
    let response = http
        .post(&url)
        .bearer_auth(token.as_str())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::provider_call_timed(
                PROVIDER_GCP,
                "decrypt",
                "Transient",
                started.elapsed(),
            );
            return Err(ProviderError::new(
                ErrorKind::Transient,
                format!("gcp kms decrypt {name}: {e}"),
            ));
        }
    };
    let status = response.status().as_u16();
    let text = Zeroizing::new(response.text().await.unwrap_or_default());
    if status != 200 {
        let kind = match status {
            400 => ErrorKind::InvalidData,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::AccessDenied,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::Throttled,
            _ => ErrorKind::Transient,
        };
        crate::metrics::provider_call_timed(
            PROVIDER_GCP,
            "decrypt",
            kind.into(),
            started.elapsed(),
        );
        // Google's error body: {"error": {"code", "message", "status"}}; no plaintext in it.
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                Some(format!(
                    "{}: {}",
                    e.get("status")?.as_str()?,
                    e.get("message")?.as_str()?
                ))
            })
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(ProviderError::new(
            kind,
            format!("gcp kms decrypt {name}: {detail}"),
        ));
    }
    crate::metrics::provider_call_timed(PROVIDER_GCP, "decrypt", "ok", started.elapsed());
    #[derive(serde::Deserialize)]
    struct Decrypted {
        #[serde(default)]
        plaintext: String,
    }
    let parsed: Decrypted = serde_json::from_str(&text).map_err(|_| {
        ProviderError::new(
            ErrorKind::Transient,
            format!("gcp kms decrypt {name}: unexpected response"),
        )
    })?;
    let encoded = Zeroizing::new(parsed.plaintext);
    base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map(SecretValue::new)
        .map_err(|_| {
            ProviderError::new(
                ErrorKind::Transient,
                format!("gcp kms decrypt {name}: the plaintext is not base64"),
            )
        })
}

/// Proves the store's credentials: an OAuth token for the Cloud KMS scope.
pub(crate) async fn gcp_validate(backend: &GcpKms) -> Result<(), ProviderError> {
    oauth_token(backend.tokens.as_ref()).await.map(|_| ())
}

/// Longest wait for an OAuth token (gcp_auth has no timeout of its own).
const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An OAuth token for the Cloud KMS scope, within [`TOKEN_TIMEOUT`]. Errors:
/// `Authentication` when refused, `Transient` on timeout.
async fn oauth_token(
    tokens: &dyn gcp_auth::TokenProvider,
) -> Result<Arc<gcp_auth::Token>, ProviderError> {
    match tokio::time::timeout(TOKEN_TIMEOUT, tokens.token(&[GCP_KMS_SCOPE])).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(e)) => Err(ProviderError::new(
            ErrorKind::Authentication,
            format!("gcp: getting an OAuth token: {e}"),
        )),
        Err(_) => Err(ProviderError::new(
            ErrorKind::Transient,
            format!(
                "gcp: getting an OAuth token: no answer within {} s",
                TOKEN_TIMEOUT.as_secs()
            ),
        )),
    }
}
