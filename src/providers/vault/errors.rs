//! Errors and metrics of the Vault calls: [`counted`] counts and times each call in
//! `secret_relay_provider_calls` and `secret_relay_provider_call_duration_seconds`,
//! [`kind_of`] classifies a failure by HTTP status and operation, and [`error_text`]
//! describes it without response bodies.

use std::time::Instant;

use rustify::errors::ClientError as RestError;
use vaultrs::error::ClientError;

use crate::providers::{ErrorKind, ProviderError};

/// Provider label of the metrics.
const PROVIDER: &str = "vault";

/// Makes one Vault HTTP call of `operation`, counts it with its outcome and duration, and
/// passes the result on.
pub(super) async fn counted<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let started = Instant::now();
    let result = call.await;
    counted_since(operation, started, result)
}

/// Counts one Vault HTTP call of `operation` that started at `started`, with its outcome and
/// duration, and passes the result on.
pub(super) fn counted_since<T>(
    operation: &'static str,
    started: Instant,
    result: Result<T, ClientError>,
) -> Result<T, ClientError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => kind_of(operation, e).into(),
    };
    crate::metrics::provider_call_timed(PROVIDER, operation, outcome, started.elapsed());
    result
}

/// HTTP status of a Vault error response, if the server answered.
pub(super) fn status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::APIError { code, .. }
        | ClientError::RestClientError {
            source: RestError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// The category of a failed call of `operation`.
pub(super) fn kind_of(operation: &str, e: &ClientError) -> ErrorKind {
    let auth_call = matches!(operation, "login" | "renew" | "lookup_self");
    if super::bounded::too_large(e) {
        return ErrorKind::InvalidData;
    }
    match status(e) {
        Some(400) if operation == "transit_decrypt" => ErrorKind::InvalidData,
        Some(404) if !auth_call => ErrorKind::NotFound,
        Some(429) => ErrorKind::Throttled,
        Some(403) if !auth_call => ErrorKind::AccessDenied,
        Some(400..=499) if auth_call => ErrorKind::Authentication,
        Some(_) => ErrorKind::Transient,
        None => match e {
            ClientError::ResponseEmptyError if operation == "login" => ErrorKind::Authentication,
            _ => ErrorKind::Transient,
        },
    }
}

/// The error of a KV call on `shown` (a Vault API path): `AccessDenied` with `vault: permission
/// denied on <path>` for 403, else the category of [`kind_of`] with the status and Vault's
/// error text.
pub(super) fn kv_error(operation: &str, e: &ClientError, shown: &str, verb: &str) -> ProviderError {
    match kind_of(operation, e) {
        ErrorKind::AccessDenied => ProviderError::new(
            ErrorKind::AccessDenied,
            format!("vault: permission denied on {shown}"),
        ),
        kind => ProviderError::new(kind, format!("vault: {verb} {shown}: {}", error_text(e))),
    }
}

/// A description of a vaultrs error that is safe to show: the status and Vault's error texts,
/// or the transport failure. Response bodies are never included (they may hold secret data).
pub(super) fn error_text(e: &ClientError) -> String {
    match e {
        ClientError::APIError { code, errors } => {
            let errors: Vec<&str> = errors
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if errors.is_empty() {
                format!("status {code}")
            } else {
                format!("status {code}: {}", errors.join("; "))
            }
        }
        ClientError::RestClientError { source } => match source {
            RestError::ServerResponseError { code, .. } => format!("status {code}"),
            RestError::RequestError { source, .. } => format!("request failed: {source:#}"),
            RestError::ResponseError { source } => {
                format!("reading the response failed: {source:#}")
            }
            _ => "unexpected response".to_string(),
        },
        ClientError::JsonParseError { .. } => "unexpected response".to_string(),
        ClientError::RestClientBuildError { source } => format!("{e}: {source}"),
        other => other.to_string(),
    }
}

pub(super) fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorKind::InvalidConfig, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_status_and_operation() {
        let api = |code| ClientError::APIError {
            code,
            errors: vec!["permission denied".into()],
        };
        assert_eq!(kind_of("kv_read", &api(403)), ErrorKind::AccessDenied);
        assert_eq!(kind_of("kv_read", &api(404)), ErrorKind::NotFound);
        assert_eq!(kind_of("kv_read", &api(429)), ErrorKind::Throttled);
        assert_eq!(kind_of("kv_read", &api(500)), ErrorKind::Transient);
        assert_eq!(kind_of("kv_read", &api(400)), ErrorKind::Transient);
        assert_eq!(kind_of("login", &api(400)), ErrorKind::Authentication);
        assert_eq!(kind_of("login", &api(403)), ErrorKind::Authentication);
        assert_eq!(kind_of("login", &api(503)), ErrorKind::Transient);
        assert_eq!(
            kind_of("login", &ClientError::ResponseEmptyError),
            ErrorKind::Authentication
        );
        assert_eq!(
            kv_error("kv_read", &api(403), "secret/data/app/db", "read").to_string(),
            "vault: permission denied on secret/data/app/db"
        );
        assert_eq!(
            kv_error("kv_read", &api(500), "secret/data/app/db", "read").to_string(),
            "vault: read secret/data/app/db: status 500: permission denied"
        );
        let no_text = ClientError::APIError {
            code: 502,
            errors: vec![],
        };
        assert_eq!(error_text(&no_text), "status 502");
    }
}
