//! Call coalescing ("single flight"): concurrent requests for the same key share one call.
//!
//! Used for every provider's `get` (see [`super::shared`]): when fifty ExternalSecrets that read
//! `/shared/db` refresh together, the backend sees one request.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};

/// Now, in Unix milliseconds (wall clock: refresh times are wall-clock instants, as in the
/// ExternalSecret's `status.refreshTime`).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A call in flight, awaited by every caller that joined it.
type Call<V> = Shared<BoxFuture<'static, V>>;

/// A call registered by [`Coalescer::start_since`], to pass to [`Coalescer::settle`].
#[derive(Clone)]
pub struct InFlight<V: Clone>(Call<V>);

/// Runs at most one call per key at a time; callers that arrive while it runs get a clone of
/// its result. Nothing is cached after the call ends.
pub struct Coalescer<K, V: Clone> {
    /// Calls in flight, with when they started (Unix ms).
    inflight: Mutex<HashMap<K, (i64, Call<V>)>>,
    calls: AtomicU64,
}

impl<K, V> Default for Coalescer<K, V>
where
    V: Clone,
{
    fn default() -> Self {
        Coalescer {
            inflight: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Returns the result of `call()` for `key`, joining a call already in flight for it.
    pub async fn run<F, Fut>(&self, key: K, call: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (call, _) = self.start_since(key.clone(), i64::MIN, call);
        self.settle(key, call).await
    }

    /// The registering half of [`Coalescer::run`], without waiting, joining only a call that
    /// started at or after `since` (Unix ms): returns the call in flight for `key` that
    /// started then or later, or registers `call()` as it, and whether `call` was started.
    /// Callers that arrive later join the returned call until [`Coalescer::settle`] removes
    /// it, so several calls can be registered at once and then made together (a batch).
    pub fn start_since<F, Fut>(&self, key: K, since: i64, call: F) -> (InFlight<V>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut inflight = self.inflight.lock().expect("coalescer lock");
        match inflight.get(&key) {
            Some((started, f)) if *started >= since => (InFlight(f.clone()), false),
            _ => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                let f = call().boxed().shared();
                inflight.insert(key, (now_ms(), f.clone()));
                (InFlight(f), true)
            }
        }
    }

    /// Waits for `call` (from [`Coalescer::start_since`]) and, once it ended, removes it from
    /// the calls in flight for `key` if it is still the one registered there.
    pub async fn settle(&self, key: K, call: InFlight<V>) -> V {
        let out = call.0.clone().await;
        let mut inflight = self.inflight.lock().expect("coalescer lock");
        if inflight.get(&key).is_some_and(|(_, f)| f.ptr_eq(&call.0)) {
            inflight.remove(&key);
        }
        out
    }

    /// Number of calls actually started (joined callers not counted).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{sync::Arc, time::Duration};

    #[tokio::test]
    async fn concurrent_calls_for_one_key_share_one_call() {
        let c: Arc<Coalescer<&'static str, u32>> = Arc::new(Coalescer::default());
        let started = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (c, started) = (c.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                c.run("k", move || async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(c.calls(), 1);
        // Once the call ended, a new request makes a new call.
        assert_eq!(c.run("k", || async { 8 }).await, 8);
        assert_eq!(c.calls(), 2);
    }
}
