//! The ExternalSecret runner: takes the ExternalSecrets the trigger gate admits
//! ([`super::trigger_gate`]) and reconciles them, at most `concurrency` at once and never two
//! of the same object at once, each after a failure again when its error policy says.
//!
//! kube's `Controller` did this over its reflector store, whose objects must carry an
//! `ObjectMeta` (module docs of [`super::external_secret_cache`]); this runner reads our own
//! cache instead and keeps kube's semantics:
//! - each reconcile is a task of its own (kube: `CancelableJoinHandle`), aborted if the runner
//!   is dropped; one that panics is logged and tried again after [`AFTER_PANIC`] (kube's
//!   runner passed the panic on to the controller);
//! - an ExternalSecret admitted while its reconcile runs waits for it to end, then runs once
//!   more (kube's runner holds such a request the same way);
//! - a reconcile's requeue ([`Requeue`]), or its error policy's after a failure, schedules the
//!   object again; it goes through the gate then, as every trigger does. A reconcile that
//!   starts for another reason drops the scheduled one (kube's scheduler keeps one request per
//!   object, the earliest);
//! - an admitted ExternalSecret that is no longer in the cache is dropped (kube:
//!   `ObjectNotFound`);
//! - on shutdown, no reconcile starts and the running ones finish.
//!
//! Nothing starts before every cache has had its first list ([`super::Context::synced`]):
//! a store or Secret missing from a cache may only be late then. The admitted ones wait here
//! (at most the gate's limit), and the gate's backlog waits in the gate.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt};
use tokio::{task::JoinSet, time::Instant};

use super::{
    CachedExternalSecret, external_secret_cache::ExternalSecretCache, trigger_gate::TriggerGate,
};

/// What a reconcile asks for next: `Some(delay)` to run again after `delay` unless something
/// triggers it before, `None` to wait for a trigger (kube's `Action::requeue` and
/// `Action::await_change`).
pub type Requeue = Option<Duration>;

/// A finished reconcile: the object it got, and its result (`None`: it panicked).
type Done<E> = (Arc<CachedExternalSecret>, Option<Result<Requeue, E>>);

/// When a reconcile that panicked runs again (a bug: not at once, not never).
const AFTER_PANIC: Duration = Duration::from_secs(60);

/// What a runner reads besides its reconciles' context: the trigger gate its ExternalSecrets
/// come through, the cache it reads them from, and how many may run at once.
pub struct Runner {
    /// The gate every trigger goes through ([`TriggerGate::gate`]).
    pub gate: Arc<TriggerGate>,
    /// The ExternalSecrets, read when a reconcile starts.
    pub cache: Arc<ExternalSecretCache>,
    /// Reconciles at once (at least 1): `--concurrency`.
    pub concurrency: usize,
}

impl Runner {
    /// Runs `reconcile` (with `ctx`) on the ExternalSecrets the gate admits from `triggers`,
    /// starting none before `synced` resolves, until `shutdown` resolves and the running
    /// reconciles have finished; see the module docs. A failed reconcile's `error_policy` says
    /// when to retry it.
    pub async fn run<C, E, Fut>(
        self,
        ctx: Arc<C>,
        triggers: impl Stream<Item = Arc<str>> + Send + 'static,
        synced: impl Future<Output = ()>,
        reconcile: impl Fn(Arc<CachedExternalSecret>, Arc<C>) -> Fut,
        error_policy: impl Fn(Arc<CachedExternalSecret>, &E, Arc<C>) -> Requeue,
        shutdown: impl Future<Output = ()>,
    ) where
        Fut: Future<Output = Result<Requeue, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let Runner {
            gate,
            cache,
            concurrency,
        } = self;
        let concurrency = concurrency.max(1);
        let mut admitted = std::pin::pin!(gate.clone().gate(triggers).fuse());
        let mut shutdown = std::pin::pin!(shutdown);
        let mut synced = std::pin::pin!(synced);
        let mut is_synced = false;
        let mut ready: VecDeque<Arc<str>> = VecDeque::new();
        let mut running: HashSet<Arc<str>> = HashSet::new();
        let mut again: HashSet<Arc<str>> = HashSet::new();
        let mut scheduled = Scheduled::default();
        let mut tasks: JoinSet<Done<E>> = JoinSet::new();
        loop {
            // Start what can start: the admitted in arrival order, while a worker is free.
            while is_synced && tasks.len() < concurrency {
                let Some(key) = ready.pop_front() else { break };
                if running.contains(&key) {
                    again.insert(key);
                    continue;
                }
                gate.started(&key);
                scheduled.cancel(&key);
                let Some(cached) = cache.get(&key) else {
                    continue;
                };
                running.insert(key);
                let reconciled = reconcile(cached.clone(), ctx.clone());
                tasks.spawn(async move {
                    let result = AssertUnwindSafe(reconciled).catch_unwind().await.ok();
                    (cached, result)
                });
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = tasks.join_next() => {
                    // Tasks are only aborted when the runner is dropped.
                    let Ok((cached, result)) = done else { continue };
                    let key = cached.key().clone();
                    running.remove(&key);
                    let next = match result {
                        Some(Ok(next)) => next,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "reconcile failed");
                            error_policy(cached, &e, ctx.clone())
                        }
                        None => {
                            tracing::error!(
                                namespace = cached.namespace(),
                                object = cached.name(),
                                "reconcile panicked"
                            );
                            Some(AFTER_PANIC)
                        }
                    };
                    if again.remove(&key) {
                        ready.push_front(key);
                    } else if let Some(delay) = next {
                        scheduled.at(key, Instant::now() + delay);
                    }
                }
                () = &mut synced, if !is_synced => is_synced = true,
                Some(key) = admitted.next() => ready.push_back(key),
                key = scheduled.next() => gate.trigger(key),
            }
        }
        // Shutdown: nothing more starts; the running ones finish (`join_parts` bounds the
        // wait).
        while tasks.join_next().await.is_some() {}
    }
}

/// The requeues waiting for their instant: one per object (the earliest), in a min-heap whose
/// entries are dropped when they fire if the object's instant is no longer theirs.
#[derive(Default)]
struct Scheduled {
    heap: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    at: HashMap<Arc<str>, Instant>,
}

impl Scheduled {
    /// Schedules `key` at `at`, unless it is scheduled earlier already.
    fn at(&mut self, key: Arc<str>, at: Instant) {
        if self.at.get(&key).is_some_and(|current| *current <= at) {
            return;
        }
        self.at.insert(key.clone(), at);
        self.heap.push(Reverse((at, key)));
    }

    /// Drops `key`'s scheduled requeue, if any.
    fn cancel(&mut self, key: &str) {
        self.at.remove(key);
        if self.at.is_empty() {
            self.heap.clear();
        }
    }

    /// The next key whose instant has come (pending while none is scheduled).
    async fn next(&mut self) -> Arc<str> {
        loop {
            let Some(Reverse((at, _))) = self.heap.peek() else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(*at).await;
            let Some(Reverse((at, key))) = self.heap.pop() else {
                continue;
            };
            if self.at.get(&key) == Some(&at) {
                self.at.remove(&key);
                return key;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::channel::{mpsc, oneshot};
    use serde_json::json;

    use super::*;
    use crate::api::ExternalSecret;

    /// What the fake reconciles saw: starts and ends (`start a @2`, in whole seconds of the
    /// paused clock), the most running at once, and whether one object ever ran twice at once.
    #[derive(Default)]
    struct Probe {
        log: Mutex<Vec<String>>,
        running: Mutex<HashSet<String>>,
        most: Mutex<usize>,
        overlap: Mutex<bool>,
        /// Keys whose reconcile fails.
        failing: Mutex<HashSet<String>>,
        start: Mutex<Option<Instant>>,
    }

    impl Probe {
        fn note(&self, what: &str, key: &str) {
            let start = self.start.lock().unwrap().expect("started");
            let secs = start.elapsed().as_secs();
            self.log
                .lock()
                .unwrap()
                .push(format!("{what} {key} @{secs}"));
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    async fn reconcile(
        es: Arc<CachedExternalSecret>,
        probe: Arc<Probe>,
    ) -> Result<Requeue, String> {
        let key = es.name().to_string();
        {
            let mut running = probe.running.lock().unwrap();
            if !running.insert(key.clone()) {
                *probe.overlap.lock().unwrap() = true;
            }
            let mut most = probe.most.lock().unwrap();
            *most = (*most).max(running.len());
        }
        probe.note("start", &key);
        tokio::time::sleep(Duration::from_secs(1)).await;
        probe.note("end", &key);
        probe.running.lock().unwrap().remove(&key);
        if probe.failing.lock().unwrap().contains(&key) {
            return Err(format!("{key} failed"));
        }
        Ok(None)
    }

    fn error_policy(_: Arc<CachedExternalSecret>, _: &String, _: Arc<Probe>) -> Requeue {
        Some(Duration::from_secs(5))
    }

    fn cache(names: &[&str]) -> Arc<ExternalSecretCache> {
        let cache = Arc::new(ExternalSecretCache::default());
        for name in names {
            let es: ExternalSecret = serde_json::from_value(json!({
                "apiVersion": "secret-relay.dev/v1alpha1", "kind": "ExternalSecret",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"secretStoreRef": {"name": "s", "kind": "SecretStore"}},
            }))
            .unwrap();
            let es = Arc::new(CachedExternalSecret::project(es));
            cache.apply(&kube::runtime::watcher::Event::Apply(es));
        }
        cache
    }

    fn key(name: &str) -> Arc<str> {
        super::super::object_key("ns", name).into()
    }

    /// A runner over the cache of `names` with `concurrency` workers and a gate of 4, started
    /// in a task: its trigger sender, the sender that marks the caches synced, the one that
    /// shuts it down, the probe and the task.
    struct Harness {
        triggers: mpsc::UnboundedSender<Arc<str>>,
        synced: Option<oneshot::Sender<()>>,
        shutdown: Option<oneshot::Sender<()>>,
        probe: Arc<Probe>,
        task: tokio::task::JoinHandle<()>,
    }

    fn harness(names: &[&str], concurrency: usize) -> Harness {
        let (triggers, rx) = mpsc::unbounded();
        let (synced, synced_rx) = oneshot::channel::<()>();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let probe = Arc::new(Probe::default());
        *probe.start.lock().unwrap() = Some(Instant::now());
        let runner = Runner {
            gate: Arc::new(TriggerGate::new(4)),
            cache: cache(names),
            concurrency,
        };
        let task = tokio::spawn(runner.run(
            probe.clone(),
            rx,
            async move {
                let _ = synced_rx.await;
            },
            reconcile,
            error_policy,
            async move {
                let _ = shutdown_rx.await;
            },
        ));
        Harness {
            triggers,
            synced: Some(synced),
            shutdown: Some(shutdown),
            probe,
            task,
        }
    }

    impl Harness {
        fn trigger(&self, names: &[&str]) {
            for name in names {
                self.triggers.unbounded_send(key(name)).unwrap();
            }
        }

        fn sync(&mut self) {
            self.synced.take().unwrap().send(()).unwrap();
        }

        /// From now on the reconciles of `names` fail.
        fn failing(&self, names: &[&str]) {
            let mut failing = self.probe.failing.lock().unwrap();
            failing.clear();
            failing.extend(names.iter().map(|n| n.to_string()));
        }
    }

    async fn sleep_ms(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_concurrency_run_at_once_in_arrival_order() {
        let mut h = harness(&["a", "b", "c", "d", "e"], 2);
        h.sync();
        h.trigger(&["a", "b", "c", "d", "e"]);
        sleep_ms(10_000).await;
        let starts: Vec<String> = h
            .probe
            .log()
            .into_iter()
            .filter(|l| l.starts_with("start"))
            .collect();
        assert_eq!(
            starts,
            [
                "start a @0",
                "start b @0",
                "start c @1",
                "start d @1",
                "start e @2"
            ]
        );
        assert_eq!(*h.probe.most.lock().unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn one_triggered_while_it_runs_runs_once_more_after_it() {
        let mut h = harness(&["a"], 4);
        h.sync();
        h.trigger(&["a"]);
        sleep_ms(300).await;
        h.trigger(&["a", "a"]);
        sleep_ms(10_000).await;
        assert_eq!(
            h.probe.log(),
            ["start a @0", "end a @1", "start a @1", "end a @2"]
        );
        assert!(!*h.probe.overlap.lock().unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_starts_before_the_caches_are_synced() {
        let mut h = harness(&["a", "b"], 2);
        h.trigger(&["a", "b"]);
        sleep_ms(10_000).await;
        assert!(h.probe.log().is_empty());
        h.sync();
        sleep_ms(1).await;
        assert_eq!(h.probe.log(), ["start a @10", "start b @10"]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_gone_from_the_cache_is_dropped_and_frees_its_slot() {
        let mut h = harness(&["a"], 1);
        h.sync();
        // Five unknown keys would hold the gate's four slots if dropping kept them.
        h.trigger(&["x1", "x2", "x3", "x4", "x5", "a"]);
        sleep_ms(5_000).await;
        assert_eq!(h.probe.log(), ["start a @0", "end a @1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_runs_again_when_the_error_policy_says() {
        let mut h = harness(&["a"], 1);
        h.failing(&["a"]);
        h.sync();
        h.trigger(&["a"]);
        sleep_ms(7_500).await;
        // Fails at 1 s, the policy says 5 s: again at 6 s.
        assert_eq!(
            h.probe.log(),
            ["start a @0", "end a @1", "start a @6", "end a @7"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_before_a_scheduled_retry_replaces_it() {
        let mut h = harness(&["a"], 1);
        h.failing(&["a"]);
        h.sync();
        h.trigger(&["a"]);
        sleep_ms(2_000).await;
        h.failing(&[]);
        h.trigger(&["a"]);
        sleep_ms(20_000).await;
        // The retry due at 6 s is dropped: the reconcile at 2 s succeeded.
        assert_eq!(
            h.probe.log(),
            ["start a @0", "end a @1", "start a @2", "end a @3"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_the_running_finish_and_no_other_starts() {
        let mut h = harness(&["a", "b"], 1);
        h.sync();
        h.trigger(&["a", "b"]);
        sleep_ms(500).await;
        h.shutdown.take().unwrap().send(()).unwrap();
        (&mut h.task).await.unwrap();
        assert_eq!(h.probe.log(), ["start a @0", "end a @1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried_later_and_others_go_on() {
        let (triggers, rx) = mpsc::unbounded();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let runner = Runner {
            gate: Arc::new(TriggerGate::new(4)),
            cache: cache(&["bad", "good"]),
            concurrency: 1,
        };
        let start = Instant::now();
        let task = tokio::spawn(runner.run(
            runs.clone(),
            rx,
            async {},
            move |es: Arc<CachedExternalSecret>, runs: Arc<Mutex<Vec<String>>>| async move {
                let name = es.name().to_string();
                runs.lock()
                    .unwrap()
                    .push(format!("{name} @{}", start.elapsed().as_secs()));
                assert_ne!(name, "bad", "a bug");
                Ok::<_, String>(None)
            },
            |_, _: &String, _| None,
            std::future::pending(),
        ));
        triggers.unbounded_send(key("bad")).unwrap();
        triggers.unbounded_send(key("good")).unwrap();
        sleep_ms(AFTER_PANIC.as_millis() as u64 + 500).await;
        assert_eq!(*runs.lock().unwrap(), ["bad @0", "good @0", "bad @60"]);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_scheduled_key_fires_once_at_its_earliest_instant() {
        let mut s = Scheduled::default();
        let start = Instant::now();
        s.at("ns/a".into(), start + Duration::from_secs(5));
        s.at("ns/a".into(), start + Duration::from_secs(2));
        s.at("ns/a".into(), start + Duration::from_secs(9));
        s.at("ns/b".into(), start + Duration::from_secs(3));
        assert_eq!(&*s.next().await, "ns/a");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(&*s.next().await, "ns/b");
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // a's later entries are stale: nothing fires any more.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), s.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_key_does_not_fire() {
        let mut s = Scheduled::default();
        let start = Instant::now();
        s.at("ns/a".into(), start + Duration::from_secs(1));
        s.at("ns/b".into(), start + Duration::from_secs(2));
        s.cancel("ns/a");
        assert_eq!(&*s.next().await, "ns/b");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
