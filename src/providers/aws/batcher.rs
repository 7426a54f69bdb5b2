//! The request batcher shared by the AWS providers' batched reads (Parameter Store's
//! `GetParameters`, 10 names a call; Secrets Manager's `BatchGetSecretValue`, 20 ids a call):
//! concurrent `get`s are merged into batches by a background task ([`run_batcher`]), and each
//! call's answer is handed back to every request waiting for it.

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::providers::{ProviderError, SecretValue};

/// The answer to one `get`: the value, `None` when the remote key does not exist.
pub(super) type GetResult = Result<Option<SecretValue>, ProviderError>;

/// How a backend's batch call is shaped.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Most distinct selectors one call accepts (`GetParameters`: 10;
    /// `BatchGetSecretValue`: 20).
    pub(super) max: usize,
    /// The remote resource a selector reads (a parameter without its `:version`). A batch
    /// holds at most one selector per resource, so that each returned item answers exactly
    /// one selector (responses do not always say which version they answer).
    pub(super) resource: fn(&str) -> &str,
}

/// One `get` waiting for its batch.
pub(super) struct GetRequest {
    /// The backend's selector: `name` or `name:version` (SSM), a secret id (Secrets Manager).
    pub(super) selector: String,
    pub(super) reply: oneshot::Sender<GetResult>,
}

impl GetRequest {
    /// A request for `selector` and the receiver of its answer.
    pub(super) fn new(selector: String) -> (GetRequest, oneshot::Receiver<GetResult>) {
        let (reply, answer) = oneshot::channel();
        (GetRequest { selector, reply }, answer)
    }
}

/// The requests of one call: at most [`Limits::max`] distinct selectors, each with every
/// request waiting for it, and at most one selector per resource.
pub(super) struct Batch {
    limits: Limits,
    pub(super) entries: Vec<BatchEntry>,
}

/// One distinct selector of a [`Batch`] and the requests waiting for it.
pub(super) struct BatchEntry {
    pub(super) selector: String,
    pub(super) waiters: Vec<oneshot::Sender<GetResult>>,
}

impl Batch {
    fn new(limits: Limits) -> Self {
        Batch {
            limits,
            entries: Vec::new(),
        }
    }

    /// Adds `request`, or hands it back when the batch is full or already holds another
    /// selector of the same resource.
    fn try_add(&mut self, request: GetRequest) -> Result<(), GetRequest> {
        if let Some(entry) = self
            .entries
            .iter_mut()
            .find(|e| e.selector == request.selector)
        {
            entry.waiters.push(request.reply);
            return Ok(());
        }
        let resource = self.limits.resource;
        let base = resource(&request.selector);
        if self.is_full() || self.entries.iter().any(|e| resource(&e.selector) == base) {
            return Err(request);
        }
        self.entries.push(BatchEntry {
            selector: request.selector,
            waiters: vec![request.reply],
        });
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.limits.max
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct selectors, in the order they joined.
    pub(super) fn selectors(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.selector.clone()).collect()
    }

    /// Hands each selector's result (in [`Batch::selectors`] order) to every request waiting
    /// for it. A caller that went away (a cancelled reconcile) is skipped.
    pub(super) fn answer(self, results: Vec<GetResult>) {
        for (entry, result) in self.entries.into_iter().zip(results) {
            for waiter in entry.waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// Batch calls of one provider in flight at once, at most: 16. A refresh tick reads every key
/// due at it in one group (read-ahead: 5,000 names, 500 `GetParameters` calls at N = 100,000);
/// sent all at once, those calls opened 500 connections, raised the operator's RSS by 15 MiB
/// for the 4 s they took (its peak of the whole 100,000 run) and would meet the backend's
/// request-rate quota (Parameter Store: 40 `GetParameters` a second by default) all together.
pub(super) const MAX_CALLS_IN_FLIGHT: usize = 16;

/// A `flush` for [`run_batcher`]: each batch is sent by `send` in a task of its own, at most
/// [`MAX_CALLS_IN_FLIGHT`] at once; the others wait their turn in the order they were flushed
/// (tokio's semaphore is fair), holding only their selectors and waiters: the call's future
/// (an SDK call's state, about 1.3 KB for `GetParameters`) is made and boxed once a permit is
/// held, so that the task of a waiting batch is not allocated at that size.
pub(super) fn send_bounded<Fut>(
    send: impl Fn(Batch) -> Fut + Send + Sync + 'static,
) -> impl FnMut(Batch)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let send = Arc::new(send);
    move |batch| {
        let (permits, send) = (permits.clone(), send.clone());
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            Box::pin(send(batch)).await
        });
    }
}

/// Groups the requests of `requests` into batches shaped by `limits` and hands each to
/// `flush`: a batch is flushed when it is full, or `window` after it was opened once no
/// request is queued. Each message is a group of requests made together (a provider's
/// `get_many`: the keys due at a refresh tick); a group is placed whole before the batcher
/// looks at the channel again, so it fills `ceil(n / limits.max)` batches however the runtime
/// schedules its sender and this task (only the last, partial batch waits for the window).
/// Requests that do not fit (another version of a resource already in the batch) open the
/// next batch. Returns when the sender side is dropped and everything received was flushed.
pub(super) async fn run_batcher(
    mut requests: mpsc::Receiver<Vec<GetRequest>>,
    window: Duration,
    limits: Limits,
    mut flush: impl FnMut(Batch),
) {
    // Requests that did not fit the previous batch, and requests received but not yet placed.
    let mut deferred: VecDeque<GetRequest> = VecDeque::new();
    let mut received: VecDeque<GetRequest> = VecDeque::new();
    let mut open = true;
    loop {
        let mut batch = Batch::new(limits);
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
/// (another version of a resource in it) go to `deferred`, for the next batch.
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

/// Queues `selectors` on `batcher` as one group and waits for their answers, one per
/// selector, in order; a selector given twice is queued once. `stopped` is the error of a
/// read whose batcher is gone (only when the runtime shuts down: the batcher lives as long as
/// its provider).
pub(super) async fn request_group(
    batcher: &mpsc::Sender<Vec<GetRequest>>,
    selectors: Vec<String>,
    stopped: impl Fn(&str) -> ProviderError,
) -> Vec<GetResult> {
    if selectors.is_empty() {
        return Vec::new();
    }
    let distinct: Vec<&String> = {
        let mut seen = std::collections::HashSet::new();
        selectors.iter().filter(|s| seen.insert(*s)).collect()
    };
    let (group, answers): (Vec<GetRequest>, Vec<_>) = distinct
        .iter()
        .map(|selector| GetRequest::new((*selector).clone()))
        .unzip();
    if batcher.send(group).await.is_err() {
        return selectors.iter().map(|s| Err(stopped(s))).collect();
    }
    let answers: std::collections::HashMap<&String, GetResult> = distinct
        .into_iter()
        .zip(futures::future::join_all(answers).await)
        .map(|(selector, answer)| (selector, answer.unwrap_or_else(|_| Err(stopped(selector)))))
        .collect();
    selectors
        .iter()
        .map(|selector| answers[selector].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refresh tick's group of 500 batches: at most [`MAX_CALLS_IN_FLIGHT`] calls at once,
    /// every batch sent, in the order flushed.
    #[tokio::test(start_paused = true)]
    async fn at_most_max_calls_are_in_flight_and_all_are_sent_in_order() {
        use std::sync::Mutex;
        #[derive(Default)]
        struct Seen {
            now: usize,
            most: usize,
            sent: Vec<String>,
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut flush = send_bounded({
            let seen = seen.clone();
            move |batch: Batch| {
                let seen = seen.clone();
                async move {
                    {
                        let mut s = seen.lock().unwrap();
                        s.now += 1;
                        s.most = s.most.max(s.now);
                        s.sent.extend(batch.selectors());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    seen.lock().unwrap().now -= 1;
                }
            }
        });
        for i in 0..500 {
            let mut batch = Batch::new(SSM);
            let (request, _answer) = GetRequest::new(format!("/k{i}"));
            assert!(batch.try_add(request).is_ok());
            flush(batch);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        let s = seen.lock().unwrap();
        assert_eq!(s.most, MAX_CALLS_IN_FLIGHT);
        assert_eq!(s.now, 0);
        let expected: Vec<String> = (0..500).map(|i| format!("/k{i}")).collect();
        assert_eq!(s.sent, expected);
    }

    /// Parameter Store's shape: 10 a call, one version of a parameter per batch.
    const SSM: Limits = Limits {
        max: 10,
        resource: |s| s.split(':').next().unwrap_or(s),
    };

    fn request(selector: &str) -> GetRequest {
        GetRequest::new(selector.to_string()).0
    }

    #[test]
    fn a_batch_holds_its_maximum_each_once_and_one_version_per_resource() {
        let mut batch = Batch::new(SSM);
        for i in 0..SSM.max {
            assert!(batch.try_add(request(&format!("/p/{i}"))).is_ok());
        }
        assert!(batch.is_full());
        assert!(batch.try_add(request("/p/new")).is_err());
        // A name already in the batch joins it even when full.
        assert!(batch.try_add(request("/p/3")).is_ok());
        assert_eq!(batch.entries.len(), SSM.max);
        assert_eq!(batch.entries[3].waiters.len(), 2);
        // Another version of a parameter in the batch waits for the next batch.
        assert!(batch.try_add(request("/p/3:2")).is_err());
    }

    /// Runs the batcher over `selectors`, all queued before it starts; returns the batches.
    async fn batches_of(limits: Limits, selectors: &[&str]) -> Vec<Vec<String>> {
        let (tx, rx) = mpsc::channel(1024);
        for s in selectors {
            tx.send(vec![request(s)]).await.unwrap();
        }
        drop(tx);
        let mut batches = Vec::new();
        run_batcher(rx, Duration::from_millis(5), limits, |b: Batch| {
            batches.push(b.selectors());
        })
        .await;
        batches
    }

    #[tokio::test]
    async fn twenty_five_names_make_three_batches_of_ten_or_two_of_twenty() {
        let names: Vec<String> = (0..25).map(|i| format!("/p/{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sizes: Vec<usize> = batches_of(SSM, &refs).await.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let twenty = Limits {
            max: 20,
            resource: |s| s,
        };
        let sizes: Vec<usize> = batches_of(twenty, &refs)
            .await
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [20, 5]);
    }

    /// The keys due at a tick come as one group: whole batches however late the window
    /// closes (here at once) and however the tasks are scheduled.
    #[tokio::test]
    async fn a_group_fills_whole_batches_whatever_the_window() {
        let (tx, rx) = mpsc::channel(16);
        let group: Vec<GetRequest> = (0..600).map(|i| request(&format!("/p/{i}"))).collect();
        tx.send(vec![request("/single")]).await.unwrap();
        tx.send(group).await.unwrap();
        tx.send(Vec::new()).await.unwrap();
        drop(tx);
        let mut sizes = Vec::new();
        run_batcher(rx, Duration::ZERO, SSM, |b: Batch| {
            sizes.push(b.entries.len())
        })
        .await;
        // The single request waits alone for the window (zero here); the group fills 60
        // batches; the empty group sends nothing.
        assert_eq!(sizes.iter().sum::<usize>(), 601);
        assert_eq!(sizes.len(), 61, "{sizes:?}");
        assert!(
            sizes.iter().filter(|n| **n == SSM.max).count() >= 59,
            "{sizes:?}"
        );
    }

    #[tokio::test]
    async fn duplicates_are_sent_once_and_versions_of_one_resource_apart() {
        let batches = batches_of(SSM, &["/a", "/b", "/a", "/a:2", "/b", "/a:2", "/a:prod"]).await;
        assert_eq!(batches, [vec!["/a", "/b"], vec!["/a:2"], vec!["/a:prod"]]);
    }

    #[tokio::test]
    async fn a_batch_closes_after_the_window() {
        let (tx, rx) = mpsc::channel(16);
        let (flushed_tx, mut flushed) = mpsc::unbounded_channel();
        let batcher = tokio::spawn(run_batcher(
            rx,
            Duration::from_millis(20),
            SSM,
            move |b: Batch| {
                let _ = flushed_tx.send(b.entries.len());
            },
        ));
        tx.send(vec![request("/solo")]).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(flushed.recv().await, Some(1));
        assert!(started.elapsed() >= Duration::from_millis(15));
        drop(tx);
        batcher.await.unwrap();
    }

    #[tokio::test]
    async fn every_waiter_gets_its_selectors_answer() {
        let (tx, rx) = mpsc::channel(16);
        let batcher = tokio::spawn(run_batcher(rx, Duration::ZERO, SSM, |b: Batch| {
            let results = b
                .selectors()
                .iter()
                .map(|s| Ok(Some(SecretValue::from(format!("value of {s}")))))
                .collect();
            b.answer(results);
        }));
        let stopped = |s: &str| ProviderError::new(crate::providers::ErrorKind::Transient, s);
        let (a, b) = tokio::join!(
            request_group(&tx, vec!["/x".into(), "/y".into()], stopped),
            request_group(&tx, vec!["/y".into()], stopped),
        );
        let text = |r: &GetResult| {
            r.as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            a.iter().map(text).collect::<Vec<_>>(),
            ["value of /x", "value of /y"]
        );
        assert_eq!(text(&b[0]), "value of /y");
        // A group naming a selector twice sends it once and answers both.
        let twice = request_group(&tx, vec!["/z".into(), "/z".into()], stopped).await;
        assert_eq!(
            twice.iter().map(text).collect::<Vec<_>>(),
            ["value of /z", "value of /z"]
        );
        drop(tx);
        batcher.await.unwrap();
    }
}
