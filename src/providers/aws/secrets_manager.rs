//! AWS Secrets Manager: [`SecretsManagerProvider`], read as ESO's `service: SecretsManager`
//! reads it, with Parameter Store's economy.
//!
//! - `get` of a secret's current version (`AWSCURRENT`) is batched: concurrent `get`s (and the
//!   keys due at one refresh tick, as one group) are merged into `BatchGetSecretValue` calls of
//!   at most [`BATCH_MAX`] secret ids, each id sent once however many ExternalSecrets read it.
//!   A secret the batch reports in `Errors` fails only the reads of that secret. A store whose
//!   role may not call `BatchGetSecretValue` (`AccessDeniedException` on the call itself, as an
//!   IAM policy written for ESO, which grants `GetSecretValue` only) is read one
//!   `GetSecretValue` per secret from then on.
//! - `get` with a `version` calls `GetSecretValue` alone: `uuid/<VersionId>` selects a version
//!   id, anything else a staging label (`AWSPREVIOUS`, a custom stage), as ESO.
//! - The value is the secret's `SecretString`, or its `SecretBinary` bytes exactly when it has
//!   no string (ESO's rule).
//! - A secret that does not exist, or is scheduled for deletion, reads as absent (`Ok(None)`),
//!   as ESO's `NoSecretErr`: `deletionPolicy` decides what becomes of the Secret.
//! - `find`: `ListSecrets` (server-side `name` prefix filter for `path`, `tag-key`/`tag-value`
//!   filters for `tags`), then `name.regexp` and the exact tag pairs checked on the listed
//!   secrets, then their values through the batcher: `ceil(n / 100)` + `ceil(n / 20)` calls.
//! - `metadataPolicy: Fetch`: the secret's tags as a JSON object (`DescribeSecret`).
//! - Credentials: as Parameter Store ([`super::credentials`]).
//! - Every HTTP request (retries included) is counted and timed in
//!   [`crate::metrics::provider_call_timed`] as `aws_secretsmanager`/`<Action>`/`<outcome>`.
//!
//! Errors name the action and the secret (`secretsmanager BatchGetSecretValue "app/db":
//! AccessDeniedException: ...`), never a value.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_secretsmanager::{
    operation::{
        batch_get_secret_value::BatchGetSecretValueError, describe_secret::DescribeSecretError,
        get_secret_value::GetSecretValueError, list_secrets::ListSecretsError,
    },
    types::{Filter, FilterNameStringType},
};
use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
use tokio::sync::mpsc;

use super::{
    batcher::{Batch, GetRequest, GetResult, Limits, request_group, run_batcher, send_bounded},
    credentials::sdk_config,
    errors::{CallFailure, CountCalls, call_error},
};
use crate::{
    api::{external_secret::ExternalSecretFind, secret_store::AwsProvider},
    providers::{AuthContext, ErrorKind, Provider, ProviderError, SecretMap, SecretValue},
};

/// Provider label of the metrics of Secrets Manager (and of STS calls made for its stores).
pub(crate) const PROVIDER: &str = "aws_secretsmanager";
/// Most secret ids `BatchGetSecretValue` accepts in one call.
pub const BATCH_MAX: usize = 20;
/// How long a batch stays open for more `get`s after its first one (as Parameter Store's).
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Page size of `ListSecrets` (its maximum).
const LIST_PAGE: i32 = 100;
/// The shape of a `BatchGetSecretValue` batch: 20 ids, each a secret of its own.
const LIMITS: Limits = Limits {
    max: BATCH_MAX,
    resource: |id| id,
};

/// The error of a read whose batcher is gone (only when the runtime shuts down).
fn stopped(id: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Transient,
        format!("secretsmanager BatchGetSecretValue {id:?}: request batcher stopped"),
    )
}

/// An AWS Secrets Manager client for one store: its credentials (cached and refreshed), and
/// the batcher that merges concurrent `get`s into `BatchGetSecretValue` calls.
///
/// Create it inside a Tokio runtime: it spawns the batcher task, which ends when the provider
/// is dropped.
pub struct SecretsManagerProvider {
    client: Client,
    /// Signed with the same credentials, for `GetCallerIdentity`.
    sts: aws_sdk_sts::Client,
    batcher: mpsc::Sender<Vec<GetRequest>>,
    /// ESO's `prefix`, put in front of every key read by `get`.
    prefix: String,
}

/// The Secrets Manager client and what the batches learn about it.
#[derive(Clone)]
struct Client {
    sm: aws_sdk_secretsmanager::Client,
    /// Set once `BatchGetSecretValue` itself was refused: reads go one `GetSecretValue` each.
    batch_refused: std::sync::Arc<AtomicBool>,
}

impl SecretsManagerProvider {
    /// Builds the client for `spec` with credentials resolved through `auth`, exactly as
    /// [`SsmProvider::new`](super::SsmProvider::new) does (static keys from Secrets, a
    /// ServiceAccount token for STS `AssumeRoleWithWebIdentity`, the default chain; `role`
    /// assumed on top).
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
        let client = Client {
            sm: aws_sdk_secretsmanager::Client::new(&config),
            batch_refused: Default::default(),
        };
        let sts = aws_sdk_sts::Client::new(&config);
        let (batcher, requests) = mpsc::channel(1024);
        let caller = client.clone();
        tokio::spawn(run_batcher(
            requests,
            BATCH_WINDOW,
            LIMITS,
            send_bounded(move |batch| caller.clone().send_batch(batch)),
        ));
        Ok(SecretsManagerProvider {
            client,
            sts,
            batcher,
            prefix: spec.prefix.clone().unwrap_or_default(),
        })
    }

    /// The ARN of the identity the store's credentials belong to (STS `GetCallerIdentity`).
    /// Errors: `Authentication` when the credentials cannot be resolved or are refused.
    pub async fn caller_identity(&self) -> Result<String, ProviderError> {
        let out = self
            .sts
            .get_caller_identity()
            .customize()
            .interceptor(CountCalls::<GetCallerIdentityError>::for_provider(
                PROVIDER,
                "GetCallerIdentity",
                true,
            ))
            .send()
            .await
            .map_err(|e| call_error(e, true).provider_error("sts", "GetCallerIdentity", None))?;
        Ok(out.arn.unwrap_or_default())
    }

    /// Every secret `ListSecrets` gives for `filters` (all pages), with its tags. Secrets
    /// scheduled for deletion are not listed (the API's default).
    async fn list(
        &self,
        filters: Vec<Filter>,
        what: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, ProviderError> {
        let mut found = Vec::new();
        let mut next_token = None;
        loop {
            let out = self
                .client
                .sm
                .list_secrets()
                .set_filters((!filters.is_empty()).then(|| filters.clone()))
                .max_results(LIST_PAGE)
                .set_next_token(next_token)
                .customize()
                .interceptor(CountCalls::<ListSecretsError>::for_provider(
                    PROVIDER,
                    "ListSecrets",
                    false,
                ))
                .send()
                .await
                .map_err(|e| {
                    call_error(e, false).provider_error("secretsmanager", "ListSecrets", Some(what))
                })?;
            for s in out.secret_list.unwrap_or_default() {
                let Some(name) = s.name else { continue };
                let tags = s
                    .tags
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
                    .collect();
                found.push((name, tags));
            }
            next_token = out.next_token.filter(|t| !t.is_empty());
            if next_token.is_none() {
                return Ok(found);
            }
        }
    }
}

impl Client {
    /// Sends one batch and answers every request waiting in it.
    async fn send_batch(self, batch: Batch) {
        let ids = batch.selectors();
        tracing::debug!(
            ids = ids.len(),
            "aws_secretsmanager: BatchGetSecretValue batch"
        );
        let results = self.batch_get(&ids).await;
        batch.answer(results);
    }

    /// The current values of `ids`, one result per id, in order: one `BatchGetSecretValue`
    /// call, or one `GetSecretValue` per id once the batch call was refused. An id the
    /// response does not answer (a partial ARN) is read alone.
    async fn batch_get(&self, ids: &[String]) -> Vec<GetResult> {
        if self.batch_refused.load(Ordering::Relaxed) {
            return self.each_alone(ids).await;
        }
        let out = self
            .sm
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.to_vec()))
            .customize()
            .interceptor(CountCalls::<BatchGetSecretValueError>::for_provider(
                PROVIDER,
                "BatchGetSecretValue",
                false,
            ))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let failure = call_error(e, false);
                if failure.kind == ErrorKind::AccessDenied {
                    tracing::warn!(
                        error = %failure.detail,
                        "aws_secretsmanager: BatchGetSecretValue refused; reading one GetSecretValue per secret from now on (grant secretsmanager:BatchGetSecretValue to batch)"
                    );
                    self.batch_refused.store(true, Ordering::Relaxed);
                    return self.each_alone(ids).await;
                }
                return ids
                    .iter()
                    .map(|id| {
                        Err(failure.provider_error(
                            "secretsmanager",
                            "BatchGetSecretValue",
                            Some(id),
                        ))
                    })
                    .collect();
            }
        };
        let mut results = match_batch(
            ids,
            out.secret_values.unwrap_or_default(),
            out.errors.unwrap_or_default(),
        );
        for (id, result) in ids.iter().zip(results.iter_mut()) {
            if result.is_none() {
                *result = Some(self.get_secret_value(id, None).await);
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// `GetSecretValue` for each of `ids` (current version), concurrently.
    async fn each_alone(&self, ids: &[String]) -> Vec<GetResult> {
        futures::future::join_all(ids.iter().map(|id| self.get_secret_value(id, None))).await
    }

    /// One `GetSecretValue`: `version` `uuid/<VersionId>` or a staging label, `None` for
    /// `AWSCURRENT`. Absent or scheduled for deletion: `Ok(None)`.
    async fn get_secret_value(&self, id: &str, version: Option<&str>) -> GetResult {
        let mut call = self.sm.get_secret_value().secret_id(id);
        match version.map(|v| v.strip_prefix("uuid/").ok_or(v)) {
            Some(Ok(version_id)) => call = call.version_id(version_id),
            Some(Err(stage)) => call = call.version_stage(stage),
            None => {}
        }
        let out = call
            .customize()
            .interceptor(CountCalls::<GetSecretValueError>::for_provider(
                PROVIDER,
                "GetSecretValue",
                false,
            ))
            .send()
            .await;
        match out {
            Ok(out) => Ok(value_of(out.secret_string, out.secret_binary)),
            Err(e) => {
                let failure = call_error(e, false);
                if absent(&failure) {
                    return Ok(None);
                }
                let what = match version {
                    Some(v) => format!("{id} (version {v})"),
                    None => id.to_string(),
                };
                Err(failure.provider_error("secretsmanager", "GetSecretValue", Some(&what)))
            }
        }
    }
}

/// Whether a failed read means the secret is not there for reading: it does not exist
/// (`ResourceNotFoundException`), or is scheduled for deletion (`InvalidRequestException`,
/// AWS: "... because it was marked for deletion", moto: "... currently marked deleted"), as
/// ESO reads both.
fn absent(failure: &CallFailure) -> bool {
    failure.kind == ErrorKind::NotFound
        || (failure.detail.starts_with("InvalidRequestException")
            && failure.detail.contains("marked")
            && failure.detail.contains("delet"))
}

/// ESO's value of a secret: its `SecretString`, else its `SecretBinary` bytes (exact).
fn value_of(
    string: Option<String>,
    binary: Option<aws_sdk_secretsmanager::primitives::Blob>,
) -> Option<SecretValue> {
    match (string, binary) {
        (Some(s), _) => Some(SecretValue::from(s)),
        (None, Some(b)) => Some(SecretValue::new(b.into_inner())),
        (None, None) => None,
    }
}

/// Pairs a `BatchGetSecretValue` response with the requested ids: the value whose `Name` or
/// `ARN` is the id; the error whose `SecretId` is the id (absent → `Ok(None)`, else the
/// error, categorized by its code); `None` for an id neither answers.
fn match_batch(
    ids: &[String],
    mut values: Vec<aws_sdk_secretsmanager::types::SecretValueEntry>,
    errors: Vec<aws_sdk_secretsmanager::types::ApiErrorType>,
) -> Vec<Option<GetResult>> {
    ids.iter()
        .map(|id| {
            if let Some(i) = values
                .iter()
                .position(|v| v.name.as_deref() == Some(id) || v.arn.as_deref() == Some(id))
            {
                let v = values.swap_remove(i);
                return Some(Ok(value_of(v.secret_string, v.secret_binary)));
            }
            let e = errors.iter().find(|e| e.secret_id.as_deref() == Some(id))?;
            let code = e.error_code.as_deref().unwrap_or("UnknownError");
            let detail = match e.message.as_deref() {
                Some(m) if !m.is_empty() => format!("{code}: {m}"),
                _ => code.to_string(),
            };
            let failure = CallFailure {
                kind: super::errors::classify_code(code),
                detail,
            };
            Some(if absent(&failure) {
                Ok(None)
            } else {
                Err(failure.provider_error("secretsmanager", "BatchGetSecretValue", Some(id)))
            })
        })
        .collect()
}

#[async_trait]
impl Provider for SecretsManagerProvider {
    /// One secret's value (`SecretString`, else `SecretBinary`): its current version through a
    /// batched `BatchGetSecretValue`; `version` (`uuid/<VersionId>` or a staging label) with
    /// `GetSecretValue`. `Ok(None)` when the secret (or version) does not exist or is
    /// scheduled for deletion.
    async fn get(&self, key: &str, version: Option<&str>) -> GetResult {
        let id = format!("{}{key}", self.prefix);
        match version
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "AWSCURRENT")
        {
            Some(v) => self.client.get_secret_value(&id, Some(v)).await,
            None => request_group(&self.batcher, vec![id], stopped)
                .await
                .pop()
                .unwrap_or_else(|| Err(stopped(key))),
        }
    }

    /// The secrets of `keys` (as [`Provider::get`]): the current versions queued as one group
    /// (`ceil(n / 20)` `BatchGetSecretValue` calls whatever the scheduling), the others read
    /// alone.
    async fn get_many(&self, keys: &[(String, Option<String>)]) -> Vec<GetResult> {
        let current = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .is_none_or(|v| v.is_empty() || v == "AWSCURRENT")
        };
        let grouped: Vec<String> = keys
            .iter()
            .filter(|(_, v)| current(v))
            .map(|(k, _)| format!("{}{k}", self.prefix))
            .collect();
        let mut batched = request_group(&self.batcher, grouped, stopped)
            .await
            .into_iter();
        let mut results = Vec::with_capacity(keys.len());
        for (key, version) in keys {
            results.push(if current(version) {
                batched.next().unwrap_or_else(|| Err(stopped(key)))
            } else {
                self.get(key, version.as_deref()).await
            });
        }
        results
    }

    /// The secret's tags as a JSON object (`DescribeSecret`; ESO's `metadataPolicy: Fetch`).
    /// `Ok(None)` when the secret does not exist.
    async fn get_metadata(&self, key: &str) -> GetResult {
        let id = format!("{}{key}", self.prefix);
        let out = self
            .client
            .sm
            .describe_secret()
            .secret_id(&id)
            .customize()
            .interceptor(CountCalls::<DescribeSecretError>::for_provider(
                PROVIDER,
                "DescribeSecret",
                false,
            ))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let failure = call_error(e, false);
                if failure.kind == ErrorKind::NotFound {
                    return Ok(None);
                }
                return Err(failure.provider_error("secretsmanager", "DescribeSecret", Some(&id)));
            }
        };
        Ok(Some(super::tags_json(
            out.tags
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| Some((t.key?, t.value.unwrap_or_default()))),
        )))
    }

    /// Secrets selected by `find`, keyed by secret name: `ListSecrets` with a `name` prefix
    /// filter for `path` and `tag-key`/`tag-value` filters for `tags`; then `name.regexp`
    /// (unanchored, on the full name) and every tag pair checked exactly; then the values,
    /// batched. Errors: `InvalidConfig` for an invalid regexp or an empty `find`.
    async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        let name = crate::providers::find_name_regex(find, "secretsmanager")?;
        if find.path.is_none() && find.tags.is_empty() && name.is_none() {
            return Err(ProviderError::new(
                ErrorKind::InvalidConfig,
                "secretsmanager find: set at least one of path, name.regexp and tags",
            ));
        }
        let (filters, what) = list_filters(find.path.as_deref(), &find.tags);
        let names: Vec<String> = self
            .list(filters, &what)
            .await?
            .into_iter()
            .filter(|(n, tags)| {
                name.as_ref().is_none_or(|re| re.is_match(n))
                    && find.tags.iter().all(|(k, v)| tags.get(k) == Some(v))
            })
            .map(|(n, _)| n)
            .collect();
        let values = request_group(&self.batcher, names.clone(), stopped).await;
        let mut found = SecretMap::new();
        for (name, value) in names.into_iter().zip(values) {
            // A secret deleted since it was listed is left out.
            if let Some(value) = value? {
                found.insert(name, value);
            }
        }
        Ok(found)
    }

    /// Yes: concurrent `get`s share `BatchGetSecretValue` calls of up to 20 ids.
    fn batched_reads(&self) -> bool {
        true
    }

    /// Resolves the credentials (assuming roles when configured) and proves them with STS
    /// `GetCallerIdentity`, which needs no IAM permission: a missing
    /// `secretsmanager:GetSecretValue` shows on the ExternalSecrets that need it, with the
    /// secret named.
    async fn validate(&self) -> Result<(), ProviderError> {
        let arn = self.caller_identity().await?;
        tracing::debug!(identity = %arn, "aws_secretsmanager: store credentials valid");
        Ok(())
    }
}

/// `ListSecrets` filters for `find` (and their description for error messages): `name`
/// (a prefix match) for `path`, `tag-key` and `tag-value` for each tag.
fn list_filters(path: Option<&str>, tags: &BTreeMap<String, String>) -> (Vec<Filter>, String) {
    let mut specs: Vec<(FilterNameStringType, &str)> = Vec::new();
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        specs.push((FilterNameStringType::Name, path));
    }
    for (k, v) in tags {
        specs.push((FilterNameStringType::TagKey, k));
        specs.push((FilterNameStringType::TagValue, v));
    }
    let what = specs
        .iter()
        .map(|(k, v)| format!("{} {v}", k.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let filters = specs
        .into_iter()
        .map(|(key, value)| Filter::builder().key(key).values(value).build())
        .collect();
    (
        filters,
        if what.is_empty() {
            "all secrets".into()
        } else {
            what
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::{
        primitives::Blob,
        types::{ApiErrorType, SecretValueEntry},
    };

    fn entry(name: &str, string: Option<&str>, binary: Option<&[u8]>) -> SecretValueEntry {
        SecretValueEntry::builder()
            .name(name)
            .arn(format!(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}-AbCdEf"
            ))
            .set_secret_string(string.map(String::from))
            .set_secret_binary(binary.map(Blob::new))
            .build()
    }

    fn error(id: &str, code: &str, message: &str) -> ApiErrorType {
        ApiErrorType::builder()
            .secret_id(id)
            .error_code(code)
            .message(message)
            .build()
    }

    #[test]
    fn a_batch_response_answers_each_id_by_name_arn_or_error() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b-AbCdEf";
        let ids: Vec<String> = ["a", arn, "gone", "deleting", "denied", "partial"]
            .map(String::from)
            .to_vec();
        let results = match_batch(
            &ids,
            vec![
                entry("b", None, Some(&[0, 159, 146, 150])),
                entry("a", Some("ay"), None),
            ],
            vec![
                error(
                    "gone",
                    "ResourceNotFoundException",
                    "Secrets Manager can't find the specified secret.",
                ),
                error(
                    "deleting",
                    "InvalidRequestException",
                    "You can't perform this operation on the secret because it was marked for deletion.",
                ),
                error(
                    "denied",
                    "AccessDeniedException",
                    "not authorized to perform: secretsmanager:GetSecretValue",
                ),
            ],
        );
        let value = |i: usize| {
            results[i]
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .as_ref()
                .map(|v| v.as_bytes().to_vec())
        };
        assert_eq!(value(0), Some(b"ay".to_vec()));
        assert_eq!(value(1), Some(vec![0, 159, 146, 150]), "binary kept exact");
        assert_eq!(value(2), None, "not found reads as absent");
        assert_eq!(
            value(3),
            None,
            "scheduled for deletion reads as absent (ESO)"
        );
        let denied = results[4].as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(denied.kind, ErrorKind::AccessDenied);
        assert_eq!(
            denied.message,
            "secretsmanager BatchGetSecretValue \"denied\": AccessDeniedException: not authorized to perform: secretsmanager:GetSecretValue"
        );
        assert!(results[5].is_none(), "an unanswered id is read alone");
    }

    #[test]
    fn a_secret_string_wins_over_its_binary() {
        let v = value_of(Some("s".into()), Some(Blob::new(b"b".to_vec()))).unwrap();
        assert_eq!(v.as_bytes(), b"s");
        assert!(value_of(None, None).is_none());
    }

    #[test]
    fn find_filters() {
        let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let (filters, what) = list_filters(Some("app/"), &tags);
        let shown: Vec<(String, Vec<String>)> = filters
            .iter()
            .map(|f| (f.key().unwrap().as_str().to_string(), f.values().to_vec()))
            .collect();
        assert_eq!(
            shown,
            [
                ("name".to_string(), vec!["app/".to_string()]),
                ("tag-key".to_string(), vec!["env".to_string()]),
                ("tag-value".to_string(), vec!["prod".to_string()]),
            ]
        );
        assert_eq!(what, "name app/, tag-key env, tag-value prod");
        assert_eq!(list_filters(None, &BTreeMap::new()).1, "all secrets");
    }
}
