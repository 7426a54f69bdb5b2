//! AWS Systems Manager Parameter Store: [`SsmProvider`].
//!
//! - `get` reads one parameter (`name`, or `name:version` / `name:label` when a version is
//!   given). Concurrent `get`s are batched into `GetParameters` calls of at most
//!   [`BATCH_MAX`] names: a background task collects requests for [`BATCH_WINDOW`] after the
//!   first one (or until ten distinct names are queued) and sends them as one call, so 25
//!   ExternalSecrets refreshing together cost 3 calls, not 25. A name asked for twice in one
//!   window is sent once.
//! - `find` uses `GetParametersByPath` for a `path`, and `DescribeParameters` (then batched
//!   `GetParameters`) for `name.regexp` and `tags`.
//! - Credentials: static keys from Secrets, a ServiceAccount token exchanged through STS
//!   `AssumeRoleWithWebIdentity`, or the SDK's default chain; `role` adds STS `AssumeRole` on
//!   top. STS credentials are cached and refreshed [`REFRESH_MARGIN`] before they expire.
//! - Every HTTP request (each retry attempt included) is counted in
//!   [`crate::metrics::provider_call`] as `aws_ssm`/`<Action>`/`<outcome>`.
//!
//! Errors name the AWS action and the key (`ssm GetParameters "/app/db": AccessDeniedException:
//! ...`), never a parameter value.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    error::Error as StdError,
    fmt,
    marker::PhantomData,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future},
};
use aws_sdk_ssm::{
    config::{
        ConfigBag, IdentityCache, Intercept, RuntimeComponents, http::HttpResponse,
        interceptors::FinalizerInterceptorContextRef,
    },
    error::{BoxError, ProvideErrorMetadata, SdkError},
    operation::{
        describe_parameters::DescribeParametersError, get_parameters::GetParametersError,
        get_parameters_by_path::GetParametersByPathError,
    },
    types::ParameterStringFilter,
};
use aws_sdk_sts::operation::{
    assume_role::AssumeRoleError, assume_role_with_web_identity::AssumeRoleWithWebIdentityError,
    get_caller_identity::GetCallerIdentityError,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{AuthContext, ErrorKind, Provider, ProviderError, SecretMap, SecretValue};
use crate::api::{
    ServiceAccountSelector,
    external_secret::ExternalSecretFind,
    secret_store::{AwsAuth, AwsProvider},
};

/// Provider label of the metrics.
const PROVIDER: &str = "aws_ssm";
/// Most names `GetParameters` accepts in one call.
pub const BATCH_MAX: usize = 10;
/// How long a batch stays open for more `get`s after its first one. Short next to a network
/// round trip, long enough to gather the gets of a burst of reconciles.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// STS credentials are replaced this long before they expire.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Session name of the roles assumed through STS (visible in CloudTrail).
const SESSION_NAME: &str = "secret-relay";
/// Audience of ServiceAccount tokens exchanged with STS, unless the reference names others.
const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// Most `GetParameters` requests a `find` keeps queued at once (so at most 5 calls in flight).
const FIND_CONCURRENCY: usize = 5 * BATCH_MAX;
/// Page size of `DescribeParameters` (its maximum).
const DESCRIBE_PAGE: i32 = 50;
/// Page size of `GetParametersByPath` (its maximum).
const BY_PATH_PAGE: i32 = 10;

type GetResult = Result<Option<SecretValue>, ProviderError>;

/// An AWS SSM Parameter Store client for one store: its credentials (cached and refreshed),
/// and the batcher that merges concurrent `get`s into `GetParameters` calls.
///
/// Create it inside a Tokio runtime: it spawns the batcher task, which ends when the provider
/// is dropped.
pub struct SsmProvider {
    ssm: aws_sdk_ssm::Client,
    /// Signed with the same credentials as `ssm`, for `GetCallerIdentity`.
    sts: aws_sdk_sts::Client,
    batcher: mpsc::Sender<GetRequest>,
}

impl SsmProvider {
    /// Builds the SSM client for `spec` with credentials resolved through `auth`:
    /// - `auth.secretRef`: access key ID, secret access key and optional session token read
    ///   from Secrets (surrounding whitespace trimmed);
    /// - `auth.jwt`: a TokenRequest token of the ServiceAccount (audience `sts.amazonaws.com`
    ///   unless given), exchanged by STS `AssumeRoleWithWebIdentity` for `spec.role`;
    /// - no `auth`: the SDK's default chain (env, web identity file, Pod Identity, IMDS).
    ///
    /// `spec.role` with `secretRef` or the default chain adds STS `AssumeRole`. With `auth`
    /// set, the credentials are resolved here (Secrets read, roles assumed), so a wrong
    /// reference fails now; the default chain is resolved on first use.
    ///
    /// Errors: `InvalidConfig` (no region, `jwt` without `role`, a refused `namespace`),
    /// `Authentication` (missing Secret or key, STS refusal), `Transient` (API failures).
    pub async fn new(spec: &AwsProvider, auth: &AuthContext) -> Result<Self, ProviderError> {
        if spec.region.trim().is_empty() {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "aws: region is required",
            ));
        }
        let config = sdk_config(spec, auth, PROVIDER).await?;
        let ssm = aws_sdk_ssm::Client::new(&config);
        let sts = aws_sdk_sts::Client::new(&config);
        let (batcher, requests) = mpsc::channel(1024);
        let caller = ssm.clone();
        tokio::spawn(run_batcher(requests, BATCH_WINDOW, move |batch| {
            tokio::spawn(send_batch(caller.clone(), batch));
        }));
        Ok(SsmProvider { ssm, sts, batcher })
    }

    /// The ARN of the identity the store's credentials belong to (STS `GetCallerIdentity`,
    /// which needs no IAM permission), e.g.
    /// `arn:aws:sts::123456789012:assumed-role/reader/secret-relay`.
    /// Errors: `Authentication` when the credentials cannot be resolved or are refused.
    pub async fn caller_identity(&self) -> Result<String, ProviderError> {
        let out = self
            .sts
            .get_caller_identity()
            .customize()
            .interceptor(CountCalls::<GetCallerIdentityError>::new(
                "GetCallerIdentity",
                true,
            ))
            .send()
            .await
            .map_err(|e| call_error(e, true).provider_error("sts", "GetCallerIdentity", None))?;
        Ok(out.arn.unwrap_or_default())
    }

    /// Queues `selector` (`name` or `name:version`) for the next `GetParameters` batch and
    /// waits for its answer.
    async fn get_selector(&self, selector: String) -> GetResult {
        // Only when the runtime shuts down: the batcher lives as long as `self`.
        let stopped = |selector: &str| {
            ProviderError::new(
                ErrorKind::Transient,
                format!("ssm GetParameters {selector:?}: request batcher stopped"),
            )
        };
        let (reply, answer) = oneshot::channel();
        let request = GetRequest {
            selector: selector.clone(),
            reply,
        };
        if self.batcher.send(request).await.is_err() {
            return Err(stopped(&selector));
        }
        answer.await.unwrap_or_else(|_| Err(stopped(&selector)))
    }

    /// Every parameter below `path` with its value: `GetParametersByPath`, recursive,
    /// decrypted, all pages.
    async fn parameters_by_path(&self, path: &str) -> Result<SecretMap, ProviderError> {
        let mut found = SecretMap::new();
        let mut next_token = None;
        loop {
            let out = self
                .ssm
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .with_decryption(true)
                .max_results(BY_PATH_PAGE)
                .set_next_token(next_token)
                .customize()
                .interceptor(CountCalls::<GetParametersByPathError>::new(
                    "GetParametersByPath",
                    false,
                ))
                .send()
                .await
                .map_err(|e| {
                    call_error(e, false).provider_error("ssm", "GetParametersByPath", Some(path))
                })?;
            for p in out.parameters.unwrap_or_default() {
                if let (Some(name), Some(value)) = (p.name, p.value) {
                    found.insert(name, SecretValue::from(value));
                }
            }
            next_token = out.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(found);
            }
        }
    }

    /// Names of the parameters that pass `filters` (`DescribeParameters`, all pages).
    /// `what` describes the filters for error messages.
    async fn describe(
        &self,
        filters: Vec<ParameterStringFilter>,
        what: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let mut names = Vec::new();
        let mut next_token = None;
        loop {
            let out = self
                .ssm
                .describe_parameters()
                .set_parameter_filters((!filters.is_empty()).then(|| filters.clone()))
                .max_results(DESCRIBE_PAGE)
                .set_next_token(next_token)
                .customize()
                .interceptor(CountCalls::<DescribeParametersError>::new(
                    "DescribeParameters",
                    false,
                ))
                .send()
                .await
                .map_err(|e| {
                    call_error(e, false).provider_error("ssm", "DescribeParameters", Some(what))
                })?;
            names.extend(
                out.parameters
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.name),
            );
            next_token = out.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(names);
            }
        }
    }

    /// Values of `names` through the batcher, [`FIND_CONCURRENCY`] at a time; names deleted
    /// in the meantime are left out.
    async fn values_of(&self, names: Vec<String>) -> Result<SecretMap, ProviderError> {
        futures::stream::iter(names)
            .map(|name| async move {
                let value = self.get_selector(name.clone()).await?;
                Ok::<_, ProviderError>((name, value))
            })
            .buffer_unordered(FIND_CONCURRENCY)
            .try_fold(SecretMap::new(), |mut found, (name, value)| async move {
                if let Some(value) = value {
                    found.insert(name, value);
                }
                Ok(found)
            })
            .await
    }
}

#[async_trait]
impl Provider for SsmProvider {
    /// One parameter's value as stored (String, StringList as its comma-separated text,
    /// SecureString decrypted), through a batched `GetParameters` call. `version`: a version
    /// number or a label (`name:version` selector). `Ok(None)` when the parameter, version or
    /// label does not exist.
    async fn get(&self, key: &str, version: Option<&str>) -> GetResult {
        self.get_selector(selector(key, version)).await
    }

    /// Parameters selected by `find`, keyed by full parameter name:
    /// - `path` alone (optionally with `name.regexp`): `GetParametersByPath`, recursive;
    /// - `tags` (all must match, `tag:<Key>` Equals filters), or `name.regexp` without `path`:
    ///   `DescribeParameters` (with a `Path` filter when `path` is set, and a `Name`
    ///   BeginsWith filter when the regexp starts with `^/literal`), then batched
    ///   `GetParameters`.
    ///
    /// `name.regexp` is unanchored and tested against the full name. Errors: `InvalidConfig`
    /// for an invalid regexp or an empty `find`.
    async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        let name = match &find.name {
            Some(n) => Some(crate::regexes::compile(&n.regexp).map_err(|e| {
                ProviderError::new(
                    ErrorKind::InvalidConfig,
                    format!("ssm find: invalid name.regexp: {e}"),
                )
            })?),
            None => None,
        };
        let matches = |n: &str| name.as_ref().is_none_or(|re| re.is_match(n));
        match (&find.path, find.tags.is_empty()) {
            (None, true) if name.is_none() => Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "ssm find: set at least one of path, name.regexp and tags",
            )),
            (Some(path), true) => {
                let mut found = self.parameters_by_path(path).await?;
                found.retain(|n, _| matches(n));
                Ok(found)
            }
            (path, _) => {
                let prefix = find.name.as_ref().and_then(|n| literal_prefix(&n.regexp));
                let (filters, what) = describe_filters(path.as_deref(), &find.tags, prefix)?;
                let mut names = self.describe(filters, &what).await?;
                names.retain(|n| matches(n));
                self.values_of(names).await
            }
        }
    }

    /// Resolves the credentials (assuming roles when configured) and proves them with STS
    /// `GetCallerIdentity`. That call needs no IAM permission, so a store whose role may only
    /// read some parameters still validates; a missing `ssm:GetParameters` permission shows
    /// on the ExternalSecrets that need it, with the key named.
    fn batched_reads(&self) -> bool {
        true
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        let arn = self.caller_identity().await?;
        tracing::debug!(identity = %arn, "aws_ssm: store credentials valid");
        Ok(())
    }
}

/// `name` or `name:version` (GetParameters selector syntax, `version` a number or a label).
fn selector(key: &str, version: Option<&str>) -> String {
    match version.map(str::trim) {
        Some(v) if !v.is_empty() => format!("{key}:{v}"),
        _ => key.to_string(),
    }
}

/// The parameter a selector names, without its `:version` (ARNs keep their own colons).
fn base_name(selector: &str) -> &str {
    let arn_colons = if selector.starts_with("arn:") { 5 } else { 0 };
    match selector.match_indices(':').nth(arn_colons) {
        Some((i, _)) => &selector[..i],
        None => selector,
    }
}

/// The literal start of `regexp` when it is anchored (`^/app/db`), for a server-side `Name`
/// BeginsWith filter that narrows `DescribeParameters`; the regexp is still applied to the
/// results. Only prefixes starting with `/` (hierarchical names) and regexps without `|`.
fn literal_prefix(regexp: &str) -> Option<String> {
    let rest = regexp.strip_prefix('^')?;
    if regexp.contains('|') {
        return None;
    }
    let literal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-');
    let len = rest.find(|c: char| !literal(c)).unwrap_or(rest.len());
    let mut prefix = &rest[..len];
    // A quantifier that may drop the last literal character (`/ab?`, `/ab*`, `/ab{0,1}`).
    if rest[len..].starts_with(['?', '*', '{']) {
        prefix = &prefix[..prefix.len().saturating_sub(1)];
    }
    (prefix.starts_with('/') && prefix.len() > 1).then(|| prefix.to_string())
}

/// `DescribeParameters` filters for `find` (and their description for error messages).
fn describe_filters(
    path: Option<&str>,
    tags: &BTreeMap<String, String>,
    name_prefix: Option<String>,
) -> Result<(Vec<ParameterStringFilter>, String), ProviderError> {
    let mut specs: Vec<(String, &str, String)> = Vec::new();
    if let Some(path) = path {
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() { "/" } else { trimmed };
        specs.push(("Path".into(), "Recursive", path.to_string()));
    }
    if let Some(prefix) = name_prefix {
        specs.push(("Name".into(), "BeginsWith", prefix));
    }
    for (k, v) in tags {
        specs.push((format!("tag:{k}"), "Equals", v.clone()));
    }
    let what = specs
        .iter()
        .map(|(k, op, v)| format!("{k} {op} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let filters = specs
        .into_iter()
        .map(|(key, option, value)| {
            ParameterStringFilter::builder()
                .key(key)
                .option(option)
                .values(value)
                .build()
                .map_err(|e| ProviderError::new(ErrorKind::InvalidConfig, format!("ssm find: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((
        filters,
        if what.is_empty() {
            "all parameters".into()
        } else {
            what
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// The SDK configuration of the store: region, endpoint, timeouts and the credentials
/// provider that its `auth` and `role` call for.
pub(crate) async fn sdk_config(
    spec: &AwsProvider,
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
            let role = role.ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::InvalidConfig,
                    "aws: auth.jwt needs role (the role the ServiceAccount token is exchanged for)",
                )
            })?;
            // AssumeRoleWithWebIdentity is unsigned: its STS client needs no credentials.
            let base = loader(spec).no_credentials().load().await;
            let sts = StsCredentials::web_identity(
                &base,
                role,
                auth.clone(),
                jwt.service_account_ref.clone(),
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

/// One HTTPS client for every store's SDK clients (SSM, STS, KMS): it builds one connector per
/// timeout setting, with the trusted roots loaded once and a shared connection pool, where a
/// client per store would load the roots and keep a pool per store. One per Tokio runtime
/// (the operator has one): a pooled connection is served by a task of the runtime that
/// opened it, and dies with that runtime.
static HTTP_CLIENTS: std::sync::LazyLock<
    std::sync::Mutex<
        std::collections::HashMap<
            Option<tokio::runtime::Id>,
            aws_sdk_ssm::config::SharedHttpClient,
        >,
    >,
> = std::sync::LazyLock::new(Default::default);

fn shared_http_client() -> aws_sdk_ssm::config::SharedHttpClient {
    let runtime = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
    HTTP_CLIENTS
        .lock()
        .expect("aws http clients lock")
        .entry(runtime)
        .or_insert_with(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build_https()
        })
        .clone()
}

/// The SDK config loader with the store's region and endpoint, the shared HTTP client, and
/// timeouts short enough that a reconcile never hangs on an unreachable endpoint.
fn loader(spec: &AwsProvider) -> aws_config::ConfigLoader {
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
    /// `AssumeRoleWithWebIdentity` with a fresh TokenRequest token of the ServiceAccount.
    WebIdentity {
        auth: Box<AuthContext>,
        service_account: ServiceAccountSelector,
    },
}

/// Temporary credentials of `role` from STS, cached until [`REFRESH_MARGIN`] before they
/// expire. One refresh runs at a time; callers arriving meanwhile wait for it. When a refresh
/// fails while the old credentials are still valid for a minute, those are used (and the
/// refresh is retried on the next call).
struct StsCredentials {
    sts: aws_sdk_sts::Client,
    role: String,
    /// Provider label of the metrics of the STS calls (`aws_ssm`, `aws_kms`).
    provider: &'static str,
    source: StsSource,
    cached: Mutex<Option<Credentials>>,
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
            cached: Mutex::new(None),
        }
    }

    fn web_identity(
        base: &SdkConfig,
        role: &str,
        auth: AuthContext,
        service_account: ServiceAccountSelector,
        provider: &'static str,
    ) -> Self {
        StsCredentials {
            sts: aws_sdk_sts::Client::new(base),
            role: role.to_string(),
            provider,
            source: StsSource::WebIdentity {
                auth: Box::new(auth),
                service_account,
            },
            cached: Mutex::new(None),
        }
    }

    /// Valid credentials: the cached ones, or new ones from STS.
    async fn credentials(&self) -> Result<Credentials, ProviderError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached
            .as_ref()
            .filter(|c| valid_until(c, now + REFRESH_MARGIN))
        {
            return Ok(c.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                tracing::debug!(role = %self.role, expiry = ?fresh.expiry(), "aws_ssm: new STS credentials");
                *cached = Some(fresh.clone());
                Ok(fresh)
            }
            Err(e) => match cached
                .as_ref()
                .filter(|c| valid_until(c, now + Duration::from_secs(60)))
            {
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
            } => {
                let token = auth
                    .service_account_token(service_account, &[STS_AUDIENCE], None)
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

// ---------------------------------------------------------------------------------------------
// Batching

/// One `get` waiting for its batch.
struct GetRequest {
    /// `name` or `name:version`.
    selector: String,
    reply: oneshot::Sender<GetResult>,
}

/// The requests of one `GetParameters` call: at most [`BATCH_MAX`] distinct selectors, each
/// with every request waiting for it, and at most one selector per parameter (so each
/// returned parameter answers exactly one selector: responses do not always say which
/// version or label they answer).
#[derive(Default)]
struct Batch {
    entries: Vec<BatchEntry>,
}

struct BatchEntry {
    selector: String,
    waiters: Vec<oneshot::Sender<GetResult>>,
}

impl Batch {
    /// Adds `request`, or hands it back when the batch is full or already holds another
    /// selector of the same parameter.
    fn try_add(&mut self, request: GetRequest) -> Result<(), GetRequest> {
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.selector == request.selector)
        {
            entry.waiters.push(request.reply);
            return Ok(());
        }
        let base = base_name(&request.selector);
        if self.is_full() || self.entries.iter().any(|e| base_name(&e.selector) == base) {
            return Err(request);
        }
        self.entries.push(BatchEntry {
            selector: request.selector,
            waiters: vec![request.reply],
        });
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= BATCH_MAX
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Groups the requests of `requests` into batches and hands each to `flush`: a batch is
/// flushed when it is full or `window` after it was opened. Requests that do not fit (another
/// version of a parameter already in the batch) open the next batch. Returns when the sender
/// side is dropped and everything received was flushed.
async fn run_batcher(
    mut requests: mpsc::Receiver<GetRequest>,
    window: Duration,
    mut flush: impl FnMut(Batch),
) {
    let mut deferred: VecDeque<GetRequest> = VecDeque::new();
    let mut open = true;
    loop {
        let mut batch = Batch::default();
        for request in std::mem::take(&mut deferred) {
            if let Err(request) = batch.try_add(request) {
                deferred.push_back(request);
            }
        }
        if batch.is_empty() {
            let first = if open { requests.recv().await } else { None };
            match first {
                Some(request) => {
                    // An empty batch takes any request.
                    let _ = batch.try_add(request);
                }
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + window;
        while open && !batch.is_full() {
            match tokio::time::timeout_at(deadline, requests.recv()).await {
                Ok(Some(request)) => {
                    if let Err(request) = batch.try_add(request) {
                        deferred.push_back(request);
                    }
                }
                Ok(None) => open = false,
                Err(_elapsed) => break,
            }
        }
        flush(batch);
    }
}

/// Sends one batch and answers every request waiting in it.
async fn send_batch(ssm: aws_sdk_ssm::Client, batch: Batch) {
    let selectors: Vec<String> = batch.entries.iter().map(|e| e.selector.clone()).collect();
    tracing::debug!(names = selectors.len(), "aws_ssm: GetParameters batch");
    let results = get_parameters(&ssm, &selectors).await;
    for (entry, result) in batch.entries.into_iter().zip(results) {
        for waiter in entry.waiters {
            // The caller may have gone away (cancelled reconcile); nothing to do then.
            let _ = waiter.send(result.clone());
        }
    }
}

/// `GetParameters` (decrypted) for `selectors`, one result per selector, in order.
///
/// One bad name fails the whole call (no permission on it, a version that does not exist, an
/// invalid name); the call is then repeated for each name alone, so the other names still get
/// their values and each error names its own key. A name alone that does not exist is
/// `Ok(None)`.
async fn get_parameters(ssm: &aws_sdk_ssm::Client, selectors: &[String]) -> Vec<GetResult> {
    let failure = match call_get_parameters(ssm, selectors).await {
        Ok(results) => return results,
        Err(failure) => failure,
    };
    let per_name = matches!(
        failure.kind,
        ErrorKind::NotFound | ErrorKind::AccessDenied | ErrorKind::InvalidConfig
    );
    if selectors.len() > 1 && per_name {
        let alone = selectors.iter().map(|selector| async move {
            match call_get_parameters(ssm, std::slice::from_ref(selector)).await {
                Ok(mut results) => results.pop().unwrap_or(Ok(None)),
                Err(failure) => failure.get_result(selector),
            }
        });
        return futures::future::join_all(alone).await;
    }
    selectors
        .iter()
        .map(|selector| {
            if selectors.len() == 1 {
                failure.get_result(selector)
            } else {
                Err(failure.provider_error("ssm", "GetParameters", Some(selector)))
            }
        })
        .collect()
}

async fn call_get_parameters(
    ssm: &aws_sdk_ssm::Client,
    selectors: &[String],
) -> Result<Vec<GetResult>, CallFailure> {
    let out = ssm
        .get_parameters()
        .set_names(Some(selectors.to_vec()))
        .with_decryption(true)
        .customize()
        .interceptor(CountCalls::<GetParametersError>::new(
            "GetParameters",
            false,
        ))
        .send()
        .await
        .map_err(|e| call_error(e, false))?;
    Ok(match_response(
        selectors,
        out.parameters.unwrap_or_default(),
        out.invalid_parameters.unwrap_or_default(),
    ))
}

/// Pairs a `GetParameters` response with the requested selectors: listed in
/// `InvalidParameters` → `Ok(None)`; else the returned parameter of the same name (or ARN).
fn match_response(
    selectors: &[String],
    mut parameters: Vec<aws_sdk_ssm::types::Parameter>,
    invalid: Vec<String>,
) -> Vec<GetResult> {
    let invalid: HashSet<String> = invalid.into_iter().collect();
    selectors
        .iter()
        .map(|selector| {
            if invalid.contains(selector) {
                return Ok(None);
            }
            let base = base_name(selector);
            let found = parameters
                .iter()
                .position(|p| p.name.as_deref() == Some(base) || p.arn.as_deref() == Some(base));
            match found {
                Some(i) => Ok(Some(SecretValue::from(parameters.swap_remove(i).value.unwrap_or_default()))),
                None => Err(ProviderError::new(
                    ErrorKind::Transient,
                    format!("ssm GetParameters {selector:?}: neither in Parameters nor in InvalidParameters of the response"),
                )),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Errors and metrics

/// A failed AWS call: its category and `Code: message` (or the SDK's description).
#[derive(Clone, Debug)]
pub(crate) struct CallFailure {
    /// The category.
    pub kind: ErrorKind,
    /// `Code: message` of the AWS error, or the SDK's description.
    pub detail: String,
}

impl CallFailure {
    /// `<service> <Action> "<key>": <detail>`.
    pub(crate) fn provider_error(
        &self,
        service: &str,
        action: &str,
        key: Option<&str>,
    ) -> ProviderError {
        let message = match key {
            Some(key) => format!("{service} {action} {key:?}: {}", self.detail),
            None => format!("{service} {action}: {}", self.detail),
        };
        ProviderError::new(self.kind, message)
    }

    /// The outcome of a `get` of `selector` alone: not found is `Ok(None)`.
    fn get_result(&self, selector: &str) -> GetResult {
        match self.kind {
            ErrorKind::NotFound => Ok(None),
            _ => Err(self.provider_error("ssm", "GetParameters", Some(selector))),
        }
    }
}

/// Classifies a failed SDK call. A failure of our own credentials provider keeps its kind and
/// message; `sts` calls fail with `Authentication` unless throttled or transient.
pub(crate) fn call_error<E>(err: SdkError<E, HttpResponse>, sts: bool) -> CallFailure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if let Some(own) = find_source::<ProviderError>(&err) {
        return CallFailure {
            kind: own.kind,
            detail: own.message.clone(),
        };
    }
    if let Some(creds) = find_source::<CredentialsError>(&err) {
        return CallFailure {
            kind: ErrorKind::Authentication,
            detail: format!("no credentials: {}", error_chain(creds)),
        };
    }
    let (kind, detail) = match &err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = e.err().code();
            let detail = match (code, e.err().message()) {
                (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
                (Some(code), _) => code.to_string(),
                (None, _) => format!("HTTP {status}: {}", error_chain(e.err())),
            };
            (classify(sts, code, Some(status)), detail)
        }
        SdkError::ConstructionFailure(_) => (ErrorKind::InvalidConfig, error_chain(&err)),
        // Timeouts, dispatch failures (connection refused, DNS, TLS), unreadable responses.
        _ => (ErrorKind::Transient, error_chain(&err)),
    };
    CallFailure { kind, detail }
}

/// The messages of `err` and its sources, joined by `: ` (a message that already ends with
/// its source's is not repeated), e.g. `dispatch failure: io error: client error (Connect):
/// tcp connect error: Connection refused (os error 111)`.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let message = e.to_string();
        if !messages.last().is_some_and(|last| last.ends_with(&message)) {
            messages.push(message);
        }
        current = e.source();
    }
    messages.join(": ")
}

/// The first error of type `T` in the source chain of `err` (itself included).
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The category of an AWS error code (SSM's JSON codes and STS's query codes), falling back
/// on the HTTP status. `sts`: every failure that is not throttling or transient is an
/// `Authentication` failure (the credential exchange was refused).
fn classify(sts: bool, code: Option<&str>, status: Option<u16>) -> ErrorKind {
    use ErrorKind::*;
    let kind = match code.unwrap_or_default() {
        "ParameterNotFound" | "ParameterVersionNotFound" => NotFound,
        "AccessDeniedException" | "AccessDenied" => AccessDenied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "TooManyUpdates" => Throttled,
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidIdentityToken"
        | "IDPRejectedClaim"
        | "RegionDisabledException" => Authentication,
        "ValidationException"
        | "InvalidFilterKey"
        | "InvalidFilterOption"
        | "InvalidFilterValue"
        | "InvalidParameterValue"
        | "MalformedPolicyDocument" => InvalidConfig,
        "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "IDPCommunicationError"
        | "InvalidNextToken" => Transient,
        _ => match status {
            Some(429) => Throttled,
            Some(401) => Authentication,
            Some(403) => AccessDenied,
            _ => Transient,
        },
    };
    match kind {
        Throttled | Transient => kind,
        _ if sts => Authentication,
        _ => kind,
    }
}

/// Counts every HTTP request of one operation (retries included) in
/// [`crate::metrics::provider_call`], with outcome `ok` or the [`ErrorKind`] name. Attempts
/// that never reached the network (credentials could not be resolved) are not counted.
/// `E` is the operation's error type, from which the AWS error code is read.
pub(crate) struct CountCalls<E> {
    provider: &'static str,
    action: &'static str,
    sts: bool,
    error: PhantomData<fn() -> E>,
}

impl<E> CountCalls<E> {
    fn new(action: &'static str, sts: bool) -> Self {
        Self::for_provider(PROVIDER, action, sts)
    }

    /// Counts calls as `provider` (`aws_kms`, ...) instead of `aws_ssm`.
    pub(crate) fn for_provider(provider: &'static str, action: &'static str, sts: bool) -> Self {
        CountCalls {
            provider,
            action,
            sts,
            error: PhantomData,
        }
    }
}

impl<E> fmt::Debug for CountCalls<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountCalls")
            .field("action", &self.action)
            .finish()
    }
}

impl<E> Intercept for CountCalls<E>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "secret-relay.CountCalls"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let status = context.response().map(|r| r.status().as_u16());
        let outcome = match context.output_or_error() {
            Some(Ok(_)) => "ok",
            Some(Err(err)) => {
                let sent = status.is_some() || err.is_connector_error() || err.is_timeout_error();
                if !sent {
                    return Ok(());
                }
                let code = err
                    .as_operation_error()
                    .and_then(|e| e.downcast_ref::<E>())
                    .and_then(|e| e.code());
                classify(self.sts, code, status).into()
            }
            None => return Ok(()),
        };
        crate::metrics::provider_call(self.provider, self.action, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_base_names() {
        assert_eq!(selector("/app/db", None), "/app/db");
        assert_eq!(selector("/app/db", Some("3")), "/app/db:3");
        assert_eq!(selector("/app/db", Some("prod")), "/app/db:prod");
        assert_eq!(selector("/app/db", Some("")), "/app/db");
        assert_eq!(base_name("/app/db:3"), "/app/db");
        assert_eq!(base_name("plain"), "plain");
        let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db";
        assert_eq!(base_name(arn), arn);
        assert_eq!(base_name(&format!("{arn}:prod")), arn);
    }

    #[test]
    fn literal_prefixes_only_when_safe() {
        assert_eq!(literal_prefix("^/app/db"), Some("/app/db".into()));
        assert_eq!(literal_prefix("^/app/.*-key$"), Some("/app/".into()));
        assert_eq!(literal_prefix("^/app/dbs?"), Some("/app/db".into()));
        assert_eq!(literal_prefix("^/app/x{0,2}"), Some("/app/".into()));
        assert_eq!(literal_prefix("/app/db"), None, "unanchored");
        assert_eq!(literal_prefix("^/a|/b"), None, "alternation");
        assert_eq!(literal_prefix("^app"), None, "not hierarchical");
        assert_eq!(literal_prefix("^(?i)/app"), None);
        assert_eq!(literal_prefix("^/?app"), None);
    }

    #[test]
    fn error_codes_are_classified() {
        use ErrorKind::*;
        assert_eq!(
            classify(false, Some("ParameterNotFound"), Some(400)),
            NotFound
        );
        assert_eq!(
            classify(false, Some("AccessDeniedException"), Some(400)),
            AccessDenied
        );
        assert_eq!(
            classify(false, Some("ThrottlingException"), Some(400)),
            Throttled
        );
        assert_eq!(
            classify(false, Some("UnrecognizedClientException"), Some(400)),
            Authentication
        );
        assert_eq!(
            classify(false, Some("ValidationException"), Some(400)),
            InvalidConfig
        );
        assert_eq!(
            classify(false, Some("InternalServerError"), Some(500)),
            Transient
        );
        assert_eq!(classify(false, None, Some(503)), Transient);
        assert_eq!(classify(false, None, Some(429)), Throttled);
        // STS: a refusal is an authentication failure; throttling stays throttling.
        assert_eq!(
            classify(true, Some("AccessDenied"), Some(403)),
            Authentication
        );
        assert_eq!(
            classify(true, Some("InvalidIdentityToken"), Some(400)),
            Authentication
        );
        assert_eq!(classify(true, Some("Throttling"), Some(400)), Throttled);
        assert_eq!(
            classify(true, Some("IDPCommunicationError"), Some(400)),
            Transient
        );
    }

    fn request(selector: &str) -> (GetRequest, oneshot::Receiver<GetResult>) {
        let (reply, answer) = oneshot::channel();
        let selector = selector.to_string();
        (GetRequest { selector, reply }, answer)
    }

    #[test]
    fn a_batch_holds_ten_names_each_once_and_one_version_per_parameter() {
        let mut batch = Batch::default();
        for i in 0..BATCH_MAX {
            assert!(batch.try_add(request(&format!("/p/{i}")).0).is_ok());
        }
        assert!(batch.is_full());
        assert!(batch.try_add(request("/p/new").0).is_err());
        // A name already in the batch joins it even when full.
        assert!(batch.try_add(request("/p/3").0).is_ok());
        assert_eq!(batch.entries.len(), BATCH_MAX);
        assert_eq!(batch.entries[3].waiters.len(), 2);
        // Another version of a parameter in the batch waits for the next batch.
        assert!(batch.try_add(request("/p/3:2").0).is_err());
    }

    /// Runs the batcher over `selectors`, all queued before it starts; returns the batches.
    async fn batches_of(selectors: &[&str]) -> Vec<Vec<String>> {
        let (tx, rx) = mpsc::channel(1024);
        let mut answers = Vec::new();
        for s in selectors {
            let (req, answer) = request(s);
            tx.send(req).await.unwrap();
            answers.push(answer);
        }
        drop(tx);
        let mut batches = Vec::new();
        run_batcher(rx, Duration::from_millis(5), |b: Batch| {
            batches.push(b.entries.iter().map(|e| e.selector.clone()).collect());
        })
        .await;
        batches
    }

    #[tokio::test]
    async fn twenty_five_names_make_three_batches() {
        let names: Vec<String> = (0..25).map(|i| format!("/p/{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sizes: Vec<usize> = batches_of(&refs).await.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
    }

    #[tokio::test]
    async fn duplicates_are_sent_once_and_versions_of_one_parameter_apart() {
        let batches = batches_of(&["/a", "/b", "/a", "/a:2", "/b", "/a:2", "/a:prod"]).await;
        assert_eq!(batches, [vec!["/a", "/b"], vec!["/a:2"], vec!["/a:prod"]]);
    }

    #[tokio::test]
    async fn a_batch_closes_after_the_window() {
        let (tx, rx) = mpsc::channel(16);
        let (flushed_tx, mut flushed) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(run_batcher(
            rx,
            Duration::from_millis(20),
            move |b: Batch| {
                let _ = flushed_tx.send(b.entries.len());
            },
        ));
        let (req, _answer) = request("/solo");
        tx.send(req).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(flushed.recv().await, Some(1));
        assert!(started.elapsed() >= Duration::from_millis(15));
        drop(tx);
        batcher.await.unwrap();
    }

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
            cached: Mutex::new(Some(cached)),
            ..sts
        }
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

    fn parameter(name: &str, value: &str) -> aws_sdk_ssm::types::Parameter {
        aws_sdk_ssm::types::Parameter::builder()
            .name(name)
            .value(value)
            .build()
    }

    #[test]
    fn responses_are_matched_to_selectors() {
        let selectors = ["/a".to_string(), "/b:2".to_string(), "/missing".to_string()];
        let results = match_response(
            &selectors,
            vec![parameter("/b", "bee"), parameter("/a", "ay")],
            vec!["/missing".to_string()],
        );
        let values: Vec<Option<String>> = results
            .into_iter()
            .map(|r| r.unwrap().map(|v| v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(values, [Some("ay".into()), Some("bee".into()), None]);
        let unanswered = match_response(&["/x".to_string()], vec![], vec![]);
        assert_eq!(
            unanswered[0].as_ref().unwrap_err().kind,
            ErrorKind::Transient
        );
    }

    #[test]
    fn find_filters() {
        let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let (filters, what) =
            describe_filters(Some("/app/"), &tags, Some("/app/db".into())).unwrap();
        let shown: Vec<(String, String, Vec<String>)> = filters
            .iter()
            .map(|f| {
                (
                    f.key().to_string(),
                    f.option().unwrap().to_string(),
                    f.values().to_vec(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("Path".into(), "Recursive".into(), vec!["/app".to_string()]),
                (
                    "Name".into(),
                    "BeginsWith".into(),
                    vec!["/app/db".to_string()]
                ),
                ("tag:env".into(), "Equals".into(), vec!["prod".to_string()]),
            ]
        );
        assert_eq!(
            what,
            "Path Recursive /app, Name BeginsWith /app/db, tag:env Equals prod"
        );
        let (_, root) = describe_filters(Some("/"), &BTreeMap::new(), None).unwrap();
        assert_eq!(root, "Path Recursive /");
    }
}
