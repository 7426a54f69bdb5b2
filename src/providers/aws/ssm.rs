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
//!   [`crate::metrics::provider_call_timed`] as `aws_ssm`/`<Action>`/`<outcome>`.
//!
//! Errors name the AWS action and the key (`ssm GetParameters "/app/db": AccessDeniedException:
//! ...`), never a parameter value.
//!
//! [`REFRESH_MARGIN`]: super::credentials::REFRESH_MARGIN

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_ssm::{
    operation::{
        describe_parameters::DescribeParametersError,
        get_parameters_by_path::GetParametersByPathError,
        list_tags_for_resource::ListTagsForResourceError,
    },
    types::{ParameterStringFilter, ResourceTypeForTagging},
};
use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::{
    batcher::{GetRequest, GetResult, request_group, run_batcher, send_bounded},
    credentials::sdk_config,
    errors::{CountCalls, PROVIDER, call_error},
    ssm_batch::{LIMITS, send_batch},
};
use crate::{
    api::{external_secret::ExternalSecretFind, secret_store::AwsProvider},
    providers::{AuthContext, ErrorKind, Provider, ProviderError, SecretMap, SecretValue},
};

pub use super::ssm_batch::BATCH_MAX;

/// How long a batch stays open for more `get`s after its first one. Short next to a network
/// round trip, long enough to gather the gets of a burst of reconciles.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Most `GetParameters` requests a `find` keeps queued at once (so at most 5 calls in flight).
const FIND_CONCURRENCY: usize = 5 * BATCH_MAX;
/// Page size of `DescribeParameters` (its maximum).
const DESCRIBE_PAGE: i32 = 50;
/// Page size of `GetParametersByPath` (its maximum).
const BY_PATH_PAGE: i32 = 10;

/// The error of a read whose batcher is gone (only when the runtime shuts down).
fn stopped(selector: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Transient,
        format!("ssm GetParameters {selector:?}: request batcher stopped"),
    )
}

/// An AWS SSM Parameter Store client for one store: its credentials (cached and refreshed),
/// and the batcher that merges concurrent `get`s into `GetParameters` calls.
///
/// Create it inside a Tokio runtime: it spawns the batcher task, which ends when the provider
/// is dropped.
pub struct SsmProvider {
    ssm: aws_sdk_ssm::Client,
    /// Signed with the same credentials as `ssm`, for `GetCallerIdentity`.
    sts: aws_sdk_sts::Client,
    batcher: mpsc::Sender<Vec<GetRequest>>,
    /// ESO's `prefix`, put in front of every key read by `get`.
    prefix: String,
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
        if spec.connection.region.trim().is_empty() {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "aws: region is required",
            ));
        }
        let config = sdk_config(&spec.connection, auth, PROVIDER).await?;
        let ssm = aws_sdk_ssm::Client::new(&config);
        let sts = aws_sdk_sts::Client::new(&config);
        let (batcher, requests) = mpsc::channel(1024);
        let caller = ssm.clone();
        tokio::spawn(run_batcher(
            requests,
            BATCH_WINDOW,
            LIMITS,
            send_bounded(move |batch| send_batch(caller.clone(), batch)),
        ));
        Ok(SsmProvider {
            ssm,
            sts,
            batcher,
            prefix: spec.prefix.clone().unwrap_or_default(),
        })
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
        self.get_selectors(vec![selector])
            .await
            .pop()
            .unwrap_or_else(|| Err(stopped("")))
    }

    /// Queues `selectors` as one group (placed in batches together, see
    /// [`run_batcher`]) and waits for their answers, one per selector, in order.
    async fn get_selectors(&self, selectors: Vec<String>) -> Vec<GetResult> {
        request_group(&self.batcher, selectors, stopped).await
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
        self.get_selector(selector(&format!("{}{key}", self.prefix), version))
            .await
    }

    /// The parameters of `keys` (as [`Provider::get`]) queued as one group: the keys due at a
    /// refresh tick fill `ceil(n / 10)` `GetParameters` calls, whatever the scheduling.
    async fn get_many(&self, keys: &[(String, Option<String>)]) -> Vec<GetResult> {
        self.get_selectors(
            keys.iter()
                .map(|(key, version)| {
                    selector(&format!("{}{key}", self.prefix), version.as_deref())
                })
                .collect(),
        )
        .await
    }

    /// The parameter's tags as a JSON object (`ListTagsForResource`, one call; ESO's
    /// `metadataPolicy: Fetch`). `Ok(None)` when the parameter does not exist.
    async fn get_metadata(&self, key: &str) -> GetResult {
        let key = &format!("{}{key}", self.prefix);
        let out = self
            .ssm
            .list_tags_for_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(key)
            .customize()
            .interceptor(CountCalls::<ListTagsForResourceError>::new(
                "ListTagsForResource",
                false,
            ))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let failure = call_error(e, false);
                if failure.detail.starts_with("InvalidResourceId")
                    || failure.kind == ErrorKind::NotFound
                {
                    return Ok(None);
                }
                return Err(failure.provider_error("ssm", "ListTagsForResource", Some(key)));
            }
        };
        Ok(Some(super::tags_json(
            out.tag_list
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key, t.value)),
        )))
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
        let name = crate::providers::find_name_regex(find, "ssm")?;
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

    /// Yes: concurrent `get`s share `GetParameters` calls of up to 10 names.
    fn batched_reads(&self) -> bool {
        true
    }

    /// Resolves the credentials (assuming roles when configured) and proves them with STS
    /// `GetCallerIdentity`. That call needs no IAM permission, so a store whose role may only
    /// read some parameters still validates; a missing `ssm:GetParameters` permission shows
    /// on the ExternalSecrets that need it, with the key named.
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

#[cfg(test)]
mod tests {
    use super::super::ssm_batch::base_name;
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
