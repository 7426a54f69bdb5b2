//! Errors and metrics of the AWS calls: [`call_error`] classifies a failed SDK call (AWS error
//! codes of SSM, STS and KMS, HTTP statuses, our own credential failures) into a
//! [`CallFailure`], and [`CountCalls`] counts and times every HTTP request in
//! [`crate::metrics::provider_call_timed`].

use std::{error::Error as StdError, fmt, marker::PhantomData, sync::Mutex, time::Instant};

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ssm::{
    config::{
        ConfigBag, Intercept, RuntimeComponents,
        http::HttpResponse,
        interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef},
    },
    error::{BoxError, ProvideErrorMetadata, SdkError},
};

use crate::providers::{ErrorKind, ProviderError};

/// Provider label of the metrics of Parameter Store (and of STS calls made for its stores).
pub(super) const PROVIDER: &str = "aws_ssm";

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
        "ParameterNotFound" | "ParameterVersionNotFound" | "ResourceNotFoundException" => NotFound,
        // Secrets Manager's `DecryptionFailure`: the KMS key of the secret refused the
        // credentials (a key policy or grant), i.e. access to the value is denied.
        "AccessDeniedException" | "AccessDenied" | "DecryptionFailure" => AccessDenied,
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
        | "MalformedPolicyDocument"
        | "InvalidParameterException"
        | "InvalidRequestException" => InvalidConfig,
        "InternalServerError"
        | "InternalServiceError"
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

/// The category of an AWS error code reported per item (Secrets Manager's
/// `BatchGetSecretValue` `Errors`), where no HTTP status applies.
pub(super) fn classify_code(code: &str) -> ErrorKind {
    classify(false, Some(code), None)
}

/// Counts every HTTP request of one operation (retries included) in
/// [`crate::metrics::provider_call_timed`], with outcome `ok` or the [`ErrorKind`] name, and
/// the time from its transmission to its answer. Attempts that never reached the network
/// (credentials could not be resolved) are not counted. `E` is the operation's error type,
/// from which the AWS error code is read. One per operation call (`customize().interceptor`):
/// its attempts follow one another, so one start time at a time is kept.
pub(crate) struct CountCalls<E> {
    provider: &'static str,
    action: &'static str,
    sts: bool,
    attempt_started: Mutex<Option<Instant>>,
    error: PhantomData<fn() -> E>,
}

impl<E> CountCalls<E> {
    pub(super) fn new(action: &'static str, sts: bool) -> Self {
        Self::for_provider(PROVIDER, action, sts)
    }

    /// Counts calls as `provider` (`aws_kms`, ...) instead of `aws_ssm`.
    pub(crate) fn for_provider(provider: &'static str, action: &'static str, sts: bool) -> Self {
        CountCalls {
            provider,
            action,
            sts,
            attempt_started: Mutex::new(None),
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

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(mut started) = self.attempt_started.lock() {
            *started = Some(Instant::now());
        }
        Ok(())
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
        let started = self.attempt_started.lock().ok().and_then(|mut s| s.take());
        match started {
            Some(started) => crate::metrics::provider_call_timed(
                self.provider,
                self.action,
                outcome,
                started.elapsed(),
            ),
            None => crate::metrics::provider_call(self.provider, self.action, outcome),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        use ErrorKind::*;
        for (sts, code, status, kind) in [
            (false, Some("ParameterNotFound"), Some(400), NotFound),
            (
                false,
                Some("AccessDeniedException"),
                Some(400),
                AccessDenied,
            ),
            (false, Some("ThrottlingException"), Some(400), Throttled),
            (
                false,
                Some("UnrecognizedClientException"),
                Some(400),
                Authentication,
            ),
            (false, Some("ValidationException"), Some(400), InvalidConfig),
            (false, Some("InternalServerError"), Some(500), Transient),
            (false, None, Some(503), Transient),
            (false, None, Some(429), Throttled),
            // STS: a refusal is an authentication failure; throttling stays throttling.
            (true, Some("AccessDenied"), Some(403), Authentication),
            (
                true,
                Some("InvalidIdentityToken"),
                Some(400),
                Authentication,
            ),
            (true, Some("Throttling"), Some(400), Throttled),
            (true, Some("IDPCommunicationError"), Some(400), Transient),
        ] {
            assert_eq!(
                classify(sts, code, status),
                kind,
                "{sts} {code:?} {status:?}"
            );
        }
    }
}
