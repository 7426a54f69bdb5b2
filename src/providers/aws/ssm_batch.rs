//! `GetParameters` batching of [`SsmProvider`](super::SsmProvider): concurrent `get`s are
//! merged into calls of at most [`BATCH_MAX`] names by a background task, and each call's
//! answer is handed back to every request waiting for it.

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use aws_sdk_ssm::operation::get_parameters::GetParametersError;
use tokio::sync::{mpsc, oneshot};

use super::errors::{CallFailure, CountCalls, call_error};
use crate::providers::{ErrorKind, ProviderError, SecretValue};

/// Most names `GetParameters` accepts in one call.
pub const BATCH_MAX: usize = 10;
/// The answer to one `get`: the value, `None` when the parameter does not exist.
pub(super) type GetResult = Result<Option<SecretValue>, ProviderError>;

/// The parameter a selector names, without its `:version` (ARNs keep their own colons).
pub(super) fn base_name(selector: &str) -> &str {
    let arn_colons = if selector.starts_with("arn:") { 5 } else { 0 };
    match selector.match_indices(':').nth(arn_colons) {
        Some((i, _)) => &selector[..i],
        None => selector,
    }
}

/// One `get` waiting for its batch.
pub(super) struct GetRequest {
    /// `name` or `name:version`.
    pub(super) selector: String,
    pub(super) reply: oneshot::Sender<GetResult>,
}

/// The requests of one `GetParameters` call: at most [`BATCH_MAX`] distinct selectors, each
/// with every request waiting for it, and at most one selector per parameter (so each
/// returned parameter answers exactly one selector: responses do not always say which
/// version or label they answer).
#[derive(Default)]
pub(super) struct Batch {
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
/// flushed when it is full, or `window` after it was opened once no request is queued.
/// Each message is a group of requests made together ([`SsmProvider::get_many`]: the keys due
/// at a refresh tick); a group is placed whole before the batcher looks at the channel again,
/// so it fills `ceil(n / BATCH_MAX)` batches however the runtime schedules its sender and this
/// task (only the last, partial batch waits for the window). Requests that do not fit
/// (another version of a parameter already in the batch) open the next batch. Returns when
/// the sender side is dropped and everything received was flushed.
///
/// [`SsmProvider::get_many`]: super::SsmProvider
pub(super) async fn run_batcher(
    mut requests: mpsc::Receiver<Vec<GetRequest>>,
    window: Duration,
    mut flush: impl FnMut(Batch),
) {
    // Requests that did not fit the previous batch, and requests received but not yet placed.
    let mut deferred: VecDeque<GetRequest> = VecDeque::new();
    let mut received: VecDeque<GetRequest> = VecDeque::new();
    let mut open = true;
    loop {
        let mut batch = Batch::default();
        for request in std::mem::take(&mut deferred) {
            if let Err(request) = batch.try_add(request) {
                deferred.push_back(request);
            }
        }
        if batch.is_empty() && received.is_empty() {
            match if open { requests.recv().await } else { None } {
                Some(group) => received.extend(group),
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + window;
        loop {
            place(&mut batch, &mut received, &mut deferred);
            if batch.is_full() || !open {
                break;
            }
            match tokio::time::timeout_at(deadline, requests.recv()).await {
                Ok(Some(group)) => received.extend(group),
                Ok(None) => open = false,
                Err(_elapsed) => {
                    // Requests already queued join before the batch closes: the wait above
                    // may have timed out only because this task's cooperative budget ran
                    // out (a `recv` then reports nothing although requests are queued).
                    while !batch.is_full() {
                        match requests.try_recv() {
                            Ok(group) => {
                                received.extend(group);
                                place(&mut batch, &mut received, &mut deferred);
                            }
                            Err(_) => break,
                        }
                    }
                    break;
                }
            }
        }
        if !batch.is_empty() {
            flush(batch);
        }
    }
}

/// Moves requests from `received` into `batch` until it is full; those that do not fit it
/// (another version of a parameter in it) go to `deferred`, for the next batch.
fn place(
    batch: &mut Batch,
    received: &mut VecDeque<GetRequest>,
    deferred: &mut VecDeque<GetRequest>,
) {
    while !batch.is_full() {
        let Some(request) = received.pop_front() else {
            return;
        };
        if let Err(request) = batch.try_add(request) {
            deferred.push_back(request);
        }
    }
}

/// Sends one batch and answers every request waiting in it.
pub(super) async fn send_batch(ssm: aws_sdk_ssm::Client, batch: Batch) {
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
            tx.send(vec![req]).await.unwrap();
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

    /// The keys due at a tick come as one group: whole batches however late the window
    /// closes (here at once) and however the tasks are scheduled.
    #[tokio::test]
    async fn a_group_fills_whole_batches_whatever_the_window() {
        let (tx, rx) = mpsc::channel(16);
        let mut answers = Vec::new();
        let group: Vec<GetRequest> = (0..600)
            .map(|i| {
                let (req, answer) = request(&format!("/p/{i}"));
                answers.push(answer);
                req
            })
            .collect();
        let (single, _answer) = request("/single");
        tx.send(vec![single]).await.unwrap();
        tx.send(group).await.unwrap();
        tx.send(Vec::new()).await.unwrap();
        drop(tx);
        let mut sizes = Vec::new();
        run_batcher(rx, Duration::ZERO, |b: Batch| sizes.push(b.entries.len())).await;
        // The single request waits alone for the window (zero here); the group fills 60
        // batches; the empty group sends nothing.
        assert_eq!(sizes.iter().sum::<usize>(), 601);
        assert_eq!(sizes.len(), 61, "{sizes:?}");
        assert!(
            sizes.iter().filter(|n| **n == BATCH_MAX).count() >= 59,
            "{sizes:?}"
        );
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
        tx.send(vec![req]).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(flushed.recv().await, Some(1));
        assert!(started.elapsed() >= Duration::from_millis(15));
        drop(tx);
        batcher.await.unwrap();
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
}
