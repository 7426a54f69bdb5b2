//! The provider every ExternalSecret sees: one built backend shared by every store that
//! resolves to the same configuration and credentials, with the economy that makes a refresh
//! cycle cost one call per distinct remote key.
//!
//! - **Coalescing:** concurrent `get`s of one `(key, version)` share one call.
//! - **Freshness cache** (moka, 15 min TTL, bounded): a `get` says how fresh its value must be (`fresh_since`, Unix
//!   milliseconds); a value fetched at or after that instant is reused instead of calling the
//!   backend again. A refresh due at instant T asks for a value fetched at T or later, which is
//!   exactly what a call of its own at T would give, so reuse never makes a Secret staler
//!   than its `refreshInterval` allows.
//! - **Aligned refresh ticks:** [`SharedProvider::next_tick`] puts the refreshes of every
//!   ExternalSecret using this provider with the same interval on the same instants (a phase
//!   derived from the provider's identity spreads different providers apart), so the values
//!   one of them fetches serve the others.
//! - **Read-ahead at a tick** (backends with batched reads, SSM): each read says when its
//!   reader is due next; the first read of a tick that misses the cache starts the reads of
//!   every key due at that tick in one go (all handed to the backend in the same poll), so
//!   SSM's batcher sends them in full batches of 10 however few ExternalSecrets the
//!   controller runs at a time and however busy the runtime is.
//! - **Health:** a backend that is slow or unreachable is given no new calls beyond one probe
//!   ([`super::health`]), so it holds none of the reconcile slots other backends need.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::FutureExt;

use super::{
    Coalescer, DynProvider, ProviderError, SecretMap, SecretValue,
    coalesce::InFlight,
    health::{Health, SLOW_AFTER},
};
use crate::api::external_secret::ExternalSecretFind;

type GetResult = Result<Option<SecretValue>, ProviderError>;

/// A remote value's identity: its key and optional version.
type Key = (String, Option<String>);

/// A read of one [`Key`] from [`SharedProvider::start_reads`]: the call to wait for, and
/// whether this request started it.
type Read = (Key, InFlight<(i64, GetResult)>, bool);

/// Reader and tick memory older than this (milliseconds) is dropped.
const MAX_AGE_MS: i64 = 3_600_000;

/// How long a fetched value stays in the cache: long enough for every ExternalSecret due at
/// one tick to take it (a tick of 10,000 objects is read in about a minute), short enough
/// that secret values do not linger: a value is a copy of a secret. 15 minutes.
const VALUE_TTL: std::time::Duration = std::time::Duration::from_secs(900);

/// Values kept at most, per provider (each zeroized when evicted or expired).
const VALUE_CAPACITY: u64 = 100_000;

pub use super::coalesce::now_ms;

#[derive(Clone)]
struct Cached {
    /// When the call that produced `value` started (Unix ms): the value is at least this fresh.
    fetched_ms: i64,
    /// The value, or `None` for a key that did not exist.
    value: Option<SecretValue>,
}

/// A built backend with coalescing, a freshness cache and a refresh phase. See the module
/// documentation.
pub struct SharedProvider {
    inner: DynProvider,
    /// Provider label of the metrics: `aws_ssm`, `vault` or `kms`.
    name: &'static str,
    /// Seed of the refresh phase: the identity fingerprint's first 8 bytes.
    seed: u64,
    gets: Coalescer<Key, (i64, GetResult)>,
    cache: moka::sync::Cache<Key, Cached>,
    /// The tick (Unix ms) at which each key's readers read it next, from their last read.
    readers: Mutex<HashMap<Key, i64>>,
    /// Ticks whose keys were already read ahead.
    prefetched: Mutex<std::collections::BTreeSet<i64>>,
    /// Admission of backend calls: a slow or unreachable backend holds no reconcile slots.
    health: Arc<Health>,
}

impl SharedProvider {
    /// Wraps `inner`, named `name` in metrics; `fingerprint` identifies its configuration and
    /// credentials (the same fingerprint gives the same refresh phase, also after a rebuild).
    pub fn new(inner: DynProvider, name: &'static str, fingerprint: [u8; 32]) -> Self {
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&fingerprint[..8]);
        SharedProvider {
            inner,
            name,
            seed: u64::from_le_bytes(seed),
            gets: Coalescer::default(),
            cache: moka::sync::Cache::builder()
                .max_capacity(VALUE_CAPACITY)
                .time_to_live(VALUE_TTL)
                .build(),
            readers: Mutex::new(HashMap::new()),
            prefetched: Mutex::new(Default::default()),
            health: Health::new(name),
        }
    }

    /// The remote value of `key` at `version` (as [`super::Provider::get`]), fetched at or
    /// after `fresh_since` (Unix ms): from the cache when a call that started then or later
    /// got it, else by joining a call in flight that started then or later, else by a new
    /// call. Only answers are cached (a value, or "does not exist"), never errors.
    ///
    /// `next_due` is the tick (Unix ms) at which the caller will read `key` again, if it
    /// refreshes. For a backend with batched reads, the first read of a tick that misses the
    /// cache also starts reads of every other key whose readers are due at that tick, so that
    /// they are all requested together and fill whole batches.
    pub async fn get(
        self: &Arc<Self>,
        key: &str,
        version: Option<&str>,
        fresh_since: i64,
        next_due: Option<i64>,
    ) -> GetResult {
        let id = (key.to_string(), version.map(str::to_string));
        if let Some(next) = next_due {
            self.readers
                .lock()
                .expect("readers lock")
                .insert(id.clone(), next);
        }
        if let Some(hit) = self.cached(&id, fresh_since) {
            crate::metrics::provider_read(self.name, "cache");
            return Ok(hit);
        }
        let read_ahead = self.inner.batched_reads() && self.read_ahead(fresh_since, &id);
        let (called, result) = self.fetch(id, fresh_since).await;
        crate::metrics::provider_read(
            self.name,
            if called || read_ahead {
                "call"
            } else {
                "cache"
            },
        );
        result
    }

    /// Reads `id` fetched at or after `fresh_since` through the coalescer, and caches the
    /// answer. Returns whether this request started the call.
    ///
    /// The backend call runs in a task of its own ([`SharedProvider::start_reads`]) and the
    /// caller waits for it at most [`SLOW_AFTER`]: then it gets `Busy` (and retries soon,
    /// quietly) while the call goes on and caches its answer for the retry, so a backend that
    /// stops answering holds no reconcile slot longer than that.
    async fn fetch(self: &Arc<Self>, id: Key, fresh_since: i64) -> (bool, GetResult) {
        let (_, call, called) = self
            .start_reads(vec![id.clone()], fresh_since)
            .pop()
            .expect("one read for one key");
        match tokio::time::timeout(self.health.wait_budget(), self.gets.settle(id, call)).await {
            Ok((_, result)) => (called, result),
            Err(_) => (
                called,
                Err(ProviderError::new(
                    super::ErrorKind::Busy,
                    format!(
                        "the backend is slow (a call has waited up to {} s); the read is retried",
                        SLOW_AFTER.as_secs()
                    ),
                )),
            ),
        }
    }

    /// Reads every key of `ids` at or after `since` (Unix ms): each joins the call in flight
    /// for it that started then or later, or is registered in the coalescer as a new call
    /// (later readers join it). The new calls are made together by one task, under one
    /// admission of [`super::health`]: their backend reads start together, so a batching
    /// backend (SSM's `GetParameters`, 10 names a call) receives them back to back and fills
    /// whole batches however busy the runtime is. Answers are cached, errors not.
    ///
    /// Returns, per key: the call to wait for ([`Coalescer::settle`](super::Coalescer)),
    /// and whether this request started a backend call for it (false when it joined one, or
    /// when the backend refused the admission).
    fn start_reads(self: &Arc<Self>, ids: Vec<Key>, since: i64) -> Vec<Read> {
        let mut reads = Vec::with_capacity(ids.len());
        let mut new = Vec::new();
        for id in ids {
            let (answer, answered) = tokio::sync::oneshot::channel::<(i64, GetResult)>();
            let (call, started) = self
                .gets
                .start_since(id.clone(), since, move || async move {
                    answered.await.unwrap_or_else(|_| {
                        (
                            now_ms(),
                            Err(ProviderError::new(
                                super::ErrorKind::Transient,
                                "the backend call failed",
                            )),
                        )
                    })
                });
            if started {
                new.push((id.clone(), answer, call.clone()));
            }
            reads.push((id, call, started));
        }
        if new.is_empty() {
            return reads;
        }
        let admitted = match self.health.admit() {
            Ok(admitted) => admitted,
            Err(refused) => {
                // Answered at once, so that a reader with no time left to wait
                // (`wait_budget` zero: the backend is slow) still gets the refusal and its
                // cause, not `Busy`.
                let now = now_ms();
                for (id, answer, call) in new {
                    let _ = answer.send((now, Err(refused.clone())));
                    let _ = self.gets.settle(id, call).now_or_never();
                }
                for read in &mut reads {
                    read.2 = false;
                }
                return reads;
            }
        };
        let this = Arc::clone(self);
        // The calls run in the span of the reconcile that started them, so their log lines
        // name its ExternalSecret.
        let span = tracing::Span::current();
        let task = async move {
            let started = now_ms();
            let ids: Vec<Key> = new.iter().map(|(id, ..)| id.clone()).collect();
            let results = this.inner.get_many(&ids).await;
            let down = results.iter().find_map(|r| {
                r.as_ref()
                    .err()
                    .filter(|e| e.kind == super::ErrorKind::Transient)
            });
            admitted.finish(&down.map_or(Ok(()), |e| Err(e.clone())));
            for ((id, answer, call), result) in new.into_iter().zip(results) {
                // An answer is cached, and the call leaves the coalescer. An error is not
                // cached: the call stays there until a reader takes it (`settle`), so that the
                // reader of a call that failed while nobody waited for it (a reader that gave
                // up after `SLOW_AFTER` retries later) learns why instead of starting another
                // call that would hang as long.
                let answered = match &result {
                    Ok(value) => {
                        this.remember(id.clone(), started, value);
                        true
                    }
                    Err(_) => false,
                };
                let _ = answer.send((started, result));
                if answered {
                    let _ = this.gets.settle(id, call).await;
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        reads
    }

    /// Caches the answer of a call that started at `started` (Unix ms), unless a newer one is
    /// cached.
    fn remember(&self, id: Key, started: i64, value: &Option<SecretValue>) {
        // Keep the newer of two answers (a slow call may end after a later one).
        let newer = self.cache.get(&id).is_some_and(|c| c.fetched_ms > started);
        if !newer {
            self.cache.insert(
                id,
                Cached {
                    fetched_ms: started,
                    value: value.clone(),
                },
            );
        }
    }

    /// Once per tick: reads, at or after `tick`, the key of the `reader` that missed the
    /// cache together with every key whose readers said they are due at `tick`
    /// ([`SharedProvider::start_reads`]: one task, whole batches). (One task per key, as
    /// before, put hundreds of tasks in the runtime's queues at a tick; behind the reconciles
    /// there, they reached the batcher far enough apart that batches closed half full.) A key
    /// nobody reads any more is read once more at most: only real reads renew a reader's
    /// entry. Returns whether a backend call for the reader's own key was started here.
    fn read_ahead(self: &Arc<Self>, tick: i64, reader: &Key) -> bool {
        {
            let mut done = self.prefetched.lock().expect("prefetched lock");
            if !done.insert(tick) {
                return false;
            }
            done.retain(|t| *t > tick - MAX_AGE_MS);
        }
        let mut due: Vec<Key> = {
            let mut readers = self.readers.lock().expect("readers lock");
            readers.retain(|_, next| *next > tick - MAX_AGE_MS);
            readers
                .iter()
                .filter(|(id, next)| **next == tick && *id != reader)
                .map(|(id, _)| id.clone())
                .collect()
        };
        due.retain(|id| self.cached(id, tick).is_none());
        due.push(reader.clone());
        self.start_reads(due, tick)
            .into_iter()
            .any(|(id, _, started)| started && id == *reader)
    }

    fn cached(&self, id: &Key, fresh_since: i64) -> Option<Option<SecretValue>> {
        self.cache
            .get(id)
            .filter(|c| c.fetched_ms >= fresh_since)
            .map(|c| c.value.clone())
    }

    /// Every remote value `find` selects ([`super::Provider::find`]); not cached. Admitted
    /// like a read (see [`super::health`]).
    pub async fn find(&self, find: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
        let call = self.health.admit()?;
        let result = self.inner.find(find).await;
        call.finish(&result);
        result
    }

    /// [`super::Provider::get_metadata`], uncached (metadata reads are rare: ESO's
    /// `metadataPolicy: Fetch`), admitted like any backend call.
    pub async fn get_metadata(&self, key: &str) -> GetResult {
        let call = self.health.admit()?;
        let result = self.inner.get_metadata(key).await;
        call.finish(&result);
        result
    }

    /// Whether the backend is down (see [`super::health`]).
    pub fn is_down(&self) -> bool {
        self.health.is_down()
    }

    /// [`super::Provider::validate`].
    pub async fn validate(&self) -> Result<(), ProviderError> {
        self.inner.validate().await
    }

    /// [`super::Provider::extract_leaves`].
    pub fn extract_leaves(&self, key: &str) -> bool {
        self.inner.extract_leaves(key)
    }

    /// The next refresh instant (Unix ms) after a refresh at `last_ms`, for a refresh
    /// interval of `interval_ms`: the first tick `phase + k × interval` at least one second
    /// after `last_ms`, the phase fixed by this provider's identity. It lies in
    /// `[last_ms + 1 s, last_ms + interval_ms + 1 s)`: ExternalSecrets synced at different
    /// instants meet on the same ticks, and none waits more than its interval (plus a second).
    pub fn next_tick(&self, last_ms: i64, interval_ms: i64) -> i64 {
        next_tick(self.seed, last_ms, interval_ms)
    }
}

fn next_tick(seed: u64, last_ms: i64, interval_ms: i64) -> i64 {
    let interval = interval_ms.max(1);
    let phase = (seed % interval as u64) as i64;
    let earliest = last_ms + 1000;
    earliest + (phase - earliest).rem_euclid(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts `get` calls; `.1`: whether it claims batched reads; `.2`: the sizes of the
    /// groups handed to `get_many`.
    struct Counting(AtomicU64, bool, Mutex<Vec<usize>>);

    #[async_trait]
    impl super::super::Provider for Counting {
        fn batched_reads(&self) -> bool {
            self.1
        }
        async fn get_many(&self, keys: &[Key]) -> Vec<GetResult> {
            self.2.lock().unwrap().push(keys.len());
            futures::future::join_all(keys.iter().map(|(k, v)| self.get(k, v.as_deref()))).await
        }
        async fn get(&self, key: &str, _: Option<&str>) -> GetResult {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok((key != "missing").then(|| SecretValue::from(format!("v{n}"))))
        }
        async fn find(&self, _: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
            Ok(SecretMap::new())
        }
        async fn validate(&self) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    fn provider_with(batched: bool) -> (Arc<Counting>, Arc<SharedProvider>) {
        let inner = Arc::new(Counting(AtomicU64::new(0), batched, Mutex::default()));
        let shared = Arc::new(SharedProvider::new(inner.clone(), "test", [7; 32]));
        (inner, shared)
    }

    fn provider() -> (Arc<Counting>, Arc<SharedProvider>) {
        provider_with(false)
    }

    #[tokio::test]
    async fn a_value_fetched_since_the_due_instant_is_reused() {
        let (calls, p) = provider();
        let due = now_ms();
        let first = p.get("k", None, due, None).await.unwrap().unwrap();
        let second = p.get("k", None, due, None).await.unwrap().unwrap();
        assert_eq!(first.as_bytes(), b"v1");
        assert_eq!(second.as_bytes(), b"v1");
        assert_eq!(calls.0.load(Ordering::SeqCst), 1);
        // A caller that needs a value fetched after that call started gets a new call.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let later = p.get("k", None, now_ms(), None).await.unwrap().unwrap();
        assert_eq!(later.as_bytes(), b"v2");
        // Another version is another value.
        p.get("k", Some("3"), due, None).await.unwrap();
        assert_eq!(calls.0.load(Ordering::SeqCst), 3);
        // "Does not exist" is an answer and is cached too.
        assert!(p.get("missing", None, due, None).await.unwrap().is_none());
        assert!(p.get("missing", None, due, None).await.unwrap().is_none());
        assert_eq!(calls.0.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn concurrent_gets_share_a_call_that_started_late_enough() {
        let (calls, p) = provider();
        let due = now_ms();
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.get("k", None, due, None).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().unwrap().as_bytes(), b"v1");
        }
        assert_eq!(calls.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_first_read_of_a_tick_reads_every_key_due_then() {
        let (calls, p) = provider_with(true);
        let keys = ["a", "b", "c", "d", "e"];
        // Tick 1: five readers, each due again at tick 2.
        let tick1 = now_ms();
        let tick2 = tick1 + 60_000;
        for k in keys {
            p.get(k, None, tick1, Some(tick2)).await.unwrap();
        }
        assert_eq!(calls.0.load(Ordering::SeqCst), 5);
        // Tick 2 (simulated: the values above are older than it): the first reader's miss
        // starts the reads of the other four keys at once.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let tick2 = now_ms();
        for k in keys {
            p.readers
                .lock()
                .unwrap()
                .insert((k.to_string(), None), tick2);
        }
        calls.2.lock().unwrap().clear();
        p.get("a", None, tick2, Some(tick2 + 60_000)).await.unwrap();
        // "a" was answered by the group's call, which asked for all five at once.
        assert_eq!(
            calls.0.load(Ordering::SeqCst),
            10,
            "all five keys read at the tick"
        );
        assert_eq!(
            *calls.2.lock().unwrap(),
            [5],
            "the tick's keys handed to the backend as one group"
        );
        // The other readers find their values read since the tick.
        for k in &keys[1..] {
            p.get(k, None, tick2, Some(tick2 + 60_000)).await.unwrap();
        }
        assert_eq!(calls.0.load(Ordering::SeqCst), 10);
        // Once per tick only, and never for a backend without batched reads.
        let (calls, p) = provider_with(false);
        for k in keys {
            p.get(k, None, tick1, Some(tick2)).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let tick3 = now_ms();
        for k in keys {
            p.readers
                .lock()
                .unwrap()
                .insert((k.to_string(), None), tick3);
        }
        p.get("a", None, tick3, None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        assert_eq!(calls.0.load(Ordering::SeqCst), 6);
    }

    /// A backend whose reads wait for `release`, then answer `late`; counts its calls.
    struct Stuck(AtomicU64, tokio::sync::Semaphore);

    #[async_trait]
    impl super::super::Provider for Stuck {
        async fn get(&self, _: &str, _: Option<&str>) -> GetResult {
            self.0.fetch_add(1, Ordering::SeqCst);
            let _ = self.1.acquire().await;
            Ok(Some(SecretValue::from("late".to_string())))
        }
        async fn find(&self, _: &ExternalSecretFind) -> Result<SecretMap, ProviderError> {
            Ok(SecretMap::new())
        }
        async fn validate(&self) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    /// issue 10: with one backend frozen, its reads held every reconcile slot for the SDK's
    /// whole timeout and other backends' ExternalSecrets waited. A read now waits at most
    /// SLOW_AFTER; the call goes on, and its answer serves the retry.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_backend_holds_a_reader_for_at_most_slow_after() {
        let inner = Arc::new(Stuck(AtomicU64::new(0), tokio::sync::Semaphore::new(0)));
        let p = Arc::new(SharedProvider::new(inner.clone(), "test", [1; 32]));
        let since = now_ms();
        let started = tokio::time::Instant::now();
        let err = p.get("k", None, since, None).await.unwrap_err();
        assert_eq!(err.kind, super::super::ErrorKind::Busy);
        assert_eq!(started.elapsed(), SLOW_AFTER);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        // The backend answers; the call that went on cached it for the retry.
        inner.1.add_permits(1);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let v = p.get("k", None, since, None).await.unwrap().unwrap();
        assert_eq!(v.as_bytes(), b"late");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1, "no second call");
    }

    #[test]
    fn ticks_are_aligned_and_within_the_interval() {
        let interval = 60_000;
        let seed = 12_345;
        let phase = (seed % interval as u64) as i64;
        for last in [
            0i64,
            5_000,
            11_344,
            11_345,
            12_345,
            12_346,
            59_999,
            1_700_000_000_123,
        ] {
            let t = next_tick(seed, last, interval);
            assert_eq!((t - phase).rem_euclid(interval), 0, "aligned, last={last}");
            assert!(
                t - last >= 1000,
                "not right after the last refresh: last={last} tick={t}"
            );
            assert!(
                t - last < interval + 1000,
                "within the interval: last={last} tick={t}"
            );
        }
        // Objects synced at different instants share the next tick.
        assert_eq!(next_tick(seed, 20_000, interval), 72_345);
        assert_eq!(next_tick(seed, 50_000, interval), 72_345);
        // Two different providers tick at different phases.
        assert_ne!(next_tick(1, 0, interval), next_tick(30_001, 0, interval));
        // A 1 s interval ticks every second, on the phase.
        assert_eq!(next_tick(seed, 10_000, 1000), 11_345);
        assert_eq!(next_tick(seed, 11_345, 1000), 12_345);
    }
}
