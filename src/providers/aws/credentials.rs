//! Credentials and SDK configuration of the AWS clients (SSM, STS, KMS): static keys from
//! Secrets, a ServiceAccount token exchanged through STS `AssumeRoleWithWebIdentity`, or the
//! SDK's default chain, with `role` adding STS `AssumeRole` on top; STS credentials cached and
//! refreshed [`REFRESH_MARGIN`] before they expire; one shared HTTPS client and the timeouts.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future},
};
use aws_sdk_ssm::config::IdentityCache;
use aws_sdk_sts::operation::{
    assume_role::AssumeRoleError, assume_role_with_web_identity::AssumeRoleWithWebIdentityError,
};
use tokio::sync::Mutex;

use crate::providers::http::PerRuntime;

use super::errors::{CountCalls, call_error};
use crate::{
    api::{
        ServiceAccountSelector,
        secret_store::{AwsAuth, AwsConnection},
    },
    providers::{AuthContext, ErrorKind, ProviderError, SecretValue},
};

/// STS credentials are replaced this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Session name of the roles assumed through STS (visible in CloudTrail).
const SESSION_NAME: &str = "secret-relay";
/// Audience of ServiceAccount tokens exchanged with STS, unless the reference names others.
const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// The SDK configuration of a store's AWS connection (`aws` or `kms.aws`): region, endpoint,
/// timeouts and the credentials provider that its `auth` and `role` call for. `provider`
/// labels the STS calls in metrics (`aws_ssm`, `aws_kms`).
pub(crate) async fn sdk_config(
    spec: &AwsConnection,
    auth: &AuthContext,
    provider: &'static str,
) -> Result<SdkConfig, ProviderError> {
    let role = spec.role.as_deref().filter(|r| !r.is_empty());
    let (base, sts) = match &spec.auth {
        None => {
            let base = loader(spec).load().await;
            let Some(role) = role else { return Ok(base) };
            let sts = StsCredentials::assume_role(&base, role, provider);
            (base, sts)
        }
        Some(AwsAuth {
            secret_ref: Some(keys),
            jwt: None,
        }) => {
            let access_key_id = text(
                auth.secret_value(&keys.access_key_id_secret_ref).await?,
                "accessKeyID",
            )?;
            let secret_key = text(
                auth.secret_value(&keys.secret_access_key_secret_ref)
                    .await?,
                "secretAccessKey",
            )?;
            let session_token = match &keys.session_token_secret_ref {
                Some(sel) => Some(text(auth.secret_value(sel).await?, "sessionToken")?),
                None => None,
            };
            let keys = Credentials::new(
                access_key_id,
                secret_key,
                session_token,
                None,
                "secret-relay-secretRef",
            );
            let base = loader(spec).credentials_provider(keys).load().await;
            let Some(role) = role else { return Ok(base) };
            let sts = StsCredentials::assume_role(&base, role, provider);
            (base, sts)
        }
        Some(AwsAuth {
            secret_ref: None,
            jwt: Some(jwt),
        }) => {
            let (role, audience) = match role {
                Some(role) => (role.to_string(), STS_AUDIENCE.to_string()),
                None => irsa(auth, &jwt.service_account_ref).await?,
            };
            // AssumeRoleWithWebIdentity is unsigned: its STS client needs no credentials.
            let base = loader(spec).no_credentials().load().await;
            let sts = StsCredentials::web_identity(
                &base,
                &role,
                auth.clone(),
                jwt.service_account_ref.clone(),
                audience,
                provider,
            );
            (base, sts)
        }
        Some(_) => {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "aws: auth needs exactly one of secretRef and jwt",
            ));
        }
    };
    let sts = Arc::new(sts);
    if spec.auth.is_some() {
        // Fail now on a wrong reference or a refused role, and start with fresh credentials.
        sts.credentials().await?;
    }
    Ok(base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(StsProvider(sts)))
        // StsCredentials caches and refreshes early by itself; the SDK's cache would keep the
        // credentials until seconds before they expire.
        .identity_cache(IdentityCache::no_cache())
        .build())
}

/// EKS's annotation naming the role of a ServiceAccount (IAM Roles for Service Accounts).
pub const ANNOTATION_ROLE_ARN: &str = "eks.amazonaws.com/role-arn";
/// EKS's annotation naming the audience of a ServiceAccount's web identity token.
pub const ANNOTATION_AUDIENCE: &str = "eks.amazonaws.com/audience";

/// The role and token audience of `auth.jwt` without `role`, as ESO and EKS take them (IRSA):
/// the ServiceAccount's [`ANNOTATION_ROLE_ARN`], and its [`ANNOTATION_AUDIENCE`], else
/// `sts.amazonaws.com`. Errors: `InvalidConfig` when neither the store nor the annotation
/// names a role; the ServiceAccount's read errors.
async fn irsa(
    auth: &AuthContext,
    sa: &ServiceAccountSelector,
) -> Result<(String, String), ProviderError> {
    let annotations = auth.service_account_annotations(sa).await?;
    let role = annotations
        .get(ANNOTATION_ROLE_ARN)
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ProviderError::new(
                ErrorKind::InvalidConfig,
                format!(
                    "aws: auth.jwt needs a role: set spec.provider.aws.role, or annotate ServiceAccount {} with {ANNOTATION_ROLE_ARN} (IRSA)",
                    sa.name
                ),
            )
        })?;
    let audience = annotations
        .get(ANNOTATION_AUDIENCE)
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .unwrap_or(STS_AUDIENCE);
    Ok((role.to_string(), audience.to_string()))
}

/// `config` with the credentials of `role`, assumed through STS `AssumeRole` with `config`'s
/// own credentials, cached and refreshed as a store's `role` is (a SOPS `kms` entry's `role`:
/// sops' `kms/keysource.go` assumes it before `Decrypt`). Nothing is called until the first
/// request signed with it.
pub(crate) fn assume_role(config: &SdkConfig, role: &str, provider: &'static str) -> SdkConfig {
    let sts = Arc::new(StsCredentials::assume_role(config, role, provider));
    config
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(StsProvider(sts)))
        .identity_cache(IdentityCache::no_cache())
        .build()
}

/// One HTTPS client for every store's SDK clients (SSM, STS, KMS): it builds one connector per
/// timeout setting, with the trusted roots loaded once and a shared connection pool, where a
/// client per store would load the roots and keep a pool per store. One per Tokio runtime
/// (the operator has one): a pooled connection is served by a task of the runtime that
/// opened it, and dies with that runtime.
static HTTP_CLIENTS: PerRuntime<(), aws_sdk_ssm::config::SharedHttpClient> = PerRuntime::new();

fn shared_http_client() -> aws_sdk_ssm::config::SharedHttpClient {
    let Ok(client) = HTTP_CLIENTS.get_or_try_make((), || {
        Ok::<_, std::convert::Infallible>(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https(),
        )
    });
    client
}

/// The SDK config loader with the store's region and endpoint, the shared HTTP client, and
/// timeouts short enough that a reconcile never hangs on an unreachable endpoint.
fn loader(spec: &AwsConnection) -> aws_config::ConfigLoader {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(20))
        .build();
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(shared_http_client())
        .region(Region::new(spec.region.clone()))
        .timeout_config(timeouts);
    match spec.endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => loader.endpoint_url(endpoint),
        None => loader,
    }
}

/// A credential read from a Secret, as text without surrounding whitespace (`echo` adds a
/// newline; AWS keys and tokens never contain whitespace).
fn text(value: SecretValue, what: &str) -> Result<String, ProviderError> {
    value.as_str().map(|s| s.trim().to_string()).ok_or_else(|| {
        ProviderError::new(
            ErrorKind::Authentication,
            format!("aws: {what} is not UTF-8 text"),
        )
    })
}

/// Where [`StsCredentials`] get their credentials from.
enum StsSource {
    /// `AssumeRole`, signed with the base credentials of the STS client.
    AssumeRole,
    /// `AssumeRoleWithWebIdentity` with a fresh TokenRequest token of the ServiceAccount, for
    /// `audience` unless the selector names its own.
    WebIdentity {
        auth: Box<AuthContext>,
        service_account: ServiceAccountSelector,
        audience: String,
    },
}

/// Temporary credentials of `role` from STS, cached until [`REFRESH_MARGIN`] before they
/// expire. One refresh runs at a time, and no lock on the credentials is held across it:
/// callers arriving meanwhile use the current credentials while they are valid for another
/// minute, and wait for the refresh only when they are not. When a refresh fails while the old
/// credentials are still valid for a minute, those are used (and the refresh is retried on the
/// next call).
struct StsCredentials {
    sts: aws_sdk_sts::Client,
    role: String,
    /// Provider label of the metrics of the STS calls (`aws_ssm`, `aws_kms`).
    provider: &'static str,
    source: StsSource,
    cached: std::sync::Mutex<Option<Credentials>>,
    /// Held by the one refresh in flight (never together with `cached`).
    refreshing: Mutex<()>,
}

impl fmt::Debug for StsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            StsSource::AssumeRole => "AssumeRole",
            StsSource::WebIdentity { .. } => "AssumeRoleWithWebIdentity",
        };
        f.debug_struct("StsCredentials")
            .field("role", &self.role)
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

impl StsCredentials {
    fn assume_role(base: &SdkConfig, role: &str, provider: &'static str) -> Self {
        StsCredentials {
            sts: aws_sdk_sts::Client::new(base),
            role: role.to_string(),
            provider,
            source: StsSource::AssumeRole,
            cached: std::sync::Mutex::new(None),
            refreshing: Mutex::new(()),
        }
    }

    fn web_identity(
        base: &SdkConfig,
        role: &str,
        auth: AuthContext,
        service_account: ServiceAccountSelector,
        audience: String,
        provider: &'static str,
    ) -> Self {
        StsCredentials {
            sts: aws_sdk_sts::Client::new(base),
            role: role.to_string(),
            provider,
            source: StsSource::WebIdentity {
                auth: Box::new(auth),
                service_account,
                audience,
            },
            cached: std::sync::Mutex::new(None),
            refreshing: Mutex::new(()),
        }
    }

    /// Valid credentials: the cached ones, or new ones from STS.
    async fn credentials(&self) -> Result<Credentials, ProviderError> {
        let fresh_enough = |now: SystemTime| {
            self.cached
                .lock()
                .expect("sts credentials lock")
                .clone()
                .filter(|c| valid_until(c, now + REFRESH_MARGIN))
        };
        let now = SystemTime::now();
        if let Some(c) = fresh_enough(now) {
            return Ok(c);
        }
        let usable = self
            .cached
            .lock()
            .expect("sts credentials lock")
            .clone()
            .filter(|c| valid_until(c, now + Duration::from_secs(60)));
        let _refresh = match (self.refreshing.try_lock(), &usable) {
            (Ok(gate), _) => gate,
            // Another caller refreshes: use the current credentials meanwhile.
            (Err(_), Some(c)) => return Ok(c.clone()),
            (Err(_), None) => self.refreshing.lock().await,
        };
        // A refresh that ended while this caller waited serves it.
        if let Some(c) = fresh_enough(SystemTime::now()) {
            return Ok(c);
        }
        match self.fetch().await {
            Ok(fresh) => {
                tracing::debug!(role = %self.role, expiry = ?fresh.expiry(), "aws_ssm: new STS credentials");
                *self.cached.lock().expect("sts credentials lock") = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match usable {
                Some(c) => {
                    tracing::warn!(role = %self.role, error = %e, "aws_ssm: refreshing STS credentials failed; using the current ones until they expire");
                    Ok(c.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<Credentials, ProviderError> {
        let (action, credentials) = match &self.source {
            StsSource::AssumeRole => (
                "AssumeRole",
                self.sts
                    .assume_role()
                    .role_arn(&self.role)
                    .role_session_name(SESSION_NAME)
                    .customize()
                    .interceptor(CountCalls::<AssumeRoleError>::for_provider(
                        self.provider,
                        "AssumeRole",
                        true,
                    ))
                    .send()
                    .await
                    .map_err(|e| {
                        call_error(e, true).provider_error("sts", "AssumeRole", Some(&self.role))
                    })?
                    .credentials,
            ),
            StsSource::WebIdentity {
                auth,
                service_account,
                audience,
            } => {
                let token = auth
                    .service_account_token(service_account, &[audience.as_str()], None)
                    .await?;
                let token = text(token, "ServiceAccount token")?;
                let action = "AssumeRoleWithWebIdentity";
                let out = self
                    .sts
                    .assume_role_with_web_identity()
                    .role_arn(&self.role)
                    .role_session_name(SESSION_NAME)
                    .web_identity_token(token)
                    .customize()
                    .interceptor(CountCalls::<AssumeRoleWithWebIdentityError>::for_provider(
                        self.provider,
                        action,
                        true,
                    ))
                    .send()
                    .await
                    .map_err(|e| {
                        call_error(e, true).provider_error("sts", action, Some(&self.role))
                    })?;
                (action, out.credentials)
            }
        };
        let c = credentials.ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Authentication,
                format!(
                    "sts {action} {:?}: no credentials in the response",
                    self.role
                ),
            )
        })?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expiry,
            "secret-relay-sts",
        ))
    }
}

/// Whether `c` is still valid at `at` (credentials without expiry always are).
fn valid_until(c: &Credentials, at: SystemTime) -> bool {
    c.expiry().is_none_or(|expiry| at < expiry)
}

/// [`StsCredentials`] as the SDK's credentials provider. Failures keep their
/// [`ProviderError`] as the source, so [`call_error`] reports them with their own kind.
#[derive(Debug)]
struct StsProvider(Arc<StsCredentials>);

impl ProvideCredentials for StsProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::aws::errors::PROVIDER;

    /// STS credentials for `role` whose STS endpoint refuses connections (any fetch fails),
    /// with `cached` credentials expiring after `valid_for`.
    fn sts_with_cache(valid_for: Duration) -> StsCredentials {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "base", "base", None, None, "test",
            )))
            .build();
        let sts =
            StsCredentials::assume_role(&config, "arn:aws:iam::123456789012:role/r", PROVIDER);
        let expiry = SystemTime::now() + valid_for;
        let cached = Credentials::new("cached", "cached", None, Some(expiry), "test");
        StsCredentials {
            cached: std::sync::Mutex::new(Some(cached)),
            ..sts
        }
    }

    /// issue 16: a tokio Mutex was held across the STS call, so one slow refresh stalled
    /// every read of the store. While another caller refreshes, credentials that are still
    /// valid serve at once.
    #[tokio::test]
    async fn a_refresh_in_flight_does_not_stall_readers() {
        let sts = sts_with_cache(Duration::from_secs(120));
        let _another_refresh = sts.refreshing.lock().await;
        let c = tokio::time::timeout(Duration::from_millis(500), sts.credentials())
            .await
            .expect("served without waiting for the refresh")
            .unwrap();
        assert_eq!(c.access_key_id(), "cached");
    }

    #[tokio::test]
    async fn sts_credentials_are_reused_until_the_refresh_margin() {
        let sts = sts_with_cache(REFRESH_MARGIN + Duration::from_secs(60));
        let c = sts
            .credentials()
            .await
            .expect("cached credentials, no STS call");
        assert_eq!(c.access_key_id(), "cached");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_credentials_that_are_still_valid() {
        let sts = sts_with_cache(Duration::from_secs(120));
        let c = sts
            .credentials()
            .await
            .expect("old credentials while valid");
        assert_eq!(c.access_key_id(), "cached");

        let sts = sts_with_cache(Duration::from_secs(30));
        let err = sts
            .credentials()
            .await
            .expect_err("about to expire: the error");
        assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
        assert!(
            err.message.starts_with(
                "sts AssumeRole \"arn:aws:iam::123456789012:role/r\": dispatch failure"
            ),
            "{}",
            err.message
        );
    }
}
