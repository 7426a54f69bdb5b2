//! `GetParameters` calls of [`SsmProvider`](super::SsmProvider): the batches its
//! [`run_batcher`](super::batcher::run_batcher) makes (at most [`BATCH_MAX`] names, one
//! selector per parameter) are sent here, and each call's answer is matched to its selectors.

use std::collections::HashSet;

use aws_sdk_ssm::operation::get_parameters::GetParametersError;

use super::{
    batcher::{Batch, GetResult, Limits},
    errors::{CallFailure, CountCalls, call_error},
};
use crate::providers::{ErrorKind, ProviderError, SecretValue};

/// Most names `GetParameters` accepts in one call.
pub const BATCH_MAX: usize = 10;

/// The shape of a `GetParameters` batch: [`BATCH_MAX`] names, one selector per parameter.
pub(super) const LIMITS: Limits = Limits {
    max: BATCH_MAX,
    resource: base_name,
};

/// The parameter a selector names, without its `:version` (ARNs keep their own colons).
pub(super) fn base_name(selector: &str) -> &str {
    let arn_colons = if selector.starts_with("arn:") { 5 } else { 0 };
    match selector.match_indices(':').nth(arn_colons) {
        Some((i, _)) => &selector[..i],
        None => selector,
    }
}

/// Sends one batch and answers every request waiting in it.
pub(super) async fn send_batch(ssm: aws_sdk_ssm::Client, batch: Batch) {
    let selectors = batch.selectors();
    tracing::debug!(names = selectors.len(), "aws_ssm: GetParameters batch");
    let results = get_parameters(&ssm, &selectors).await;
    batch.answer(results);
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

impl CallFailure {
    /// The outcome of a `get` of `selector` alone: not found is `Ok(None)`.
    fn get_result(&self, selector: &str) -> GetResult {
        match self.kind {
            ErrorKind::NotFound => Ok(None),
            _ => Err(self.provider_error("ssm", "GetParameters", Some(selector))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
