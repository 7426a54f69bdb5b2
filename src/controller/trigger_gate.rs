//! A bound on the reconcile requests that wait in kube's controller queue.
//!
//! Every trigger of an ExternalSecret (its own watch, its managed Secret's watch, a store
//! change, a refresh timer) became a request in kube's scheduler: a hash-map entry and a
//! `DelayQueue` slot with the `ObjectRef` and a reason, about 0.95 KB each (heaptrack). At a
//! start the first lists trigger every ExternalSecret at once, and kube's runner holds them all
//! until the ExternalSecret cache is ready: 10,000 requests (9.5 MB) at N = 10,000, 95 MB at
//! 100,000, in a hash table that never shrinks again.
//!
//! [`TriggerGate`] takes the triggers instead and lets at most `limit` of them into kube's queue
//! (admitted, not yet started); the rest wait here in order, one `namespace/name` string each
//! (about 80 bytes with the queue and set entries). A trigger for an ExternalSecret already
//! waiting here or admitted adds nothing, as kube's scheduler merges them too. A reconcile
//! frees its slot when it starts ([`TriggerGate::started`]), and a request kube drops because
//! its object is gone frees it too ([`TriggerGate::released`]).
//!
//! A trigger dropped while its ExternalSecret is admitted is not lost: kube's runner reads the
//! object from the cache when it starts the reconcile, and the reconcile reads the Secret and
//! store caches after it starts; only a change of the ExternalSecret itself between the
//! runner's read and the reconcile's start could be missed, so [`TriggerGate::started`] asks
//! whether the object the reconcile got is still the cached one and queues it again if not.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::{Stream, StreamExt, task::AtomicWaker};
use kube::runtime::reflector::ObjectRef;

use super::CachedExternalSecret;

/// The triggers waiting for a slot and the ones admitted, by `namespace/name`.
#[derive(Default)]
struct Slots {
    waiting: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
    /// Admitted keys, each with whether a trigger for it was dropped since.
    admitted: HashMap<Arc<str>, bool>,
}

/// Lets at most `limit` ExternalSecret triggers into kube's controller queue at a time (module
/// docs). Shared by the trigger stream ([`TriggerGate::gate`]) and the reconciles.
pub struct TriggerGate {
    limit: usize,
    slots: Mutex<Slots>,
    waker: AtomicWaker,
}

impl TriggerGate {
    /// A gate admitting at most `limit` (at least 1) requests not yet started.
    pub fn new(limit: usize) -> Self {
        TriggerGate {
            limit: limit.max(1),
            slots: Mutex::default(),
            waker: AtomicWaker::new(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().expect("trigger gate lock")
    }

    fn push(&self, key: &str) {
        let mut slots = self.slots();
        if let Some(dropped) = slots.admitted.get_mut(key) {
            *dropped = true;
        } else if !slots.queued.contains(key) {
            let key: Arc<str> = key.into();
            slots.queued.insert(key.clone());
            slots.waiting.push_back(key);
        }
    }

    fn admit(&self) -> Option<ObjectRef<CachedExternalSecret>> {
        let mut slots = self.slots();
        if slots.admitted.len() >= self.limit {
            return None;
        }
        let key = slots.waiting.pop_front()?;
        slots.queued.remove(&key);
        let es = super::object_ref(&key);
        slots.admitted.insert(key, false);
        Some(es)
    }

    /// A reconcile of `namespace/name` starts (or kube dropped its request): its slot is free.
    /// If a trigger for it was dropped while it was admitted and `stale()` says the object the
    /// reconcile got is no longer the cached one, it is queued again.
    pub fn started(&self, key: &str, stale: impl FnOnce() -> bool) {
        let dropped = self.slots().admitted.remove(key);
        if dropped == Some(true) && stale() {
            self.push(key);
        }
        if dropped.is_some() {
            self.waker.wake();
        }
    }

    /// kube dropped a request because its ExternalSecret is not in the cache (deleted, or a
    /// Secret's label names one that does not exist): its slot is free.
    pub fn released(&self, key: &str) {
        self.started(key, || false);
    }

    /// (waiting, admitted) counts, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.waiting.len(), slots.admitted.len())
    }

    /// The gated stream of `triggers`: polls `triggers` as fast as they come (they drive the
    /// caches' watches), and yields each ExternalSecret once a slot is free. Ends when
    /// `triggers` ends and nothing waits.
    pub fn gate(
        self: Arc<Self>,
        triggers: impl Stream<Item = ObjectRef<CachedExternalSecret>> + Send + 'static,
    ) -> impl Stream<Item = ObjectRef<CachedExternalSecret>> + Send + 'static {
        Gated {
            gate: self,
            triggers: triggers.boxed(),
            ended: false,
        }
    }
}

struct Gated {
    gate: Arc<TriggerGate>,
    triggers: futures::stream::BoxStream<'static, ObjectRef<CachedExternalSecret>>,
    ended: bool,
}

impl Stream for Gated {
    type Item = ObjectRef<CachedExternalSecret>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while !self.ended {
            match self.triggers.poll_next_unpin(cx) {
                Poll::Ready(Some(es)) => {
                    let key =
                        super::object_key(es.namespace.as_deref().unwrap_or_default(), &es.name);
                    self.gate.push(&key);
                }
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        // Registered before looking, so a slot freed in between wakes this task.
        self.gate.waker.register(cx.waker());
        match self.gate.admit() {
            Some(es) => Poll::Ready(Some(es)),
            None if self.ended && self.gate.slots().waiting.is_empty() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, channel::mpsc};

    fn es(name: &str) -> ObjectRef<CachedExternalSecret> {
        ObjectRef::new(name).within("ns")
    }

    /// Everything the gated stream yields right now, without waiting.
    fn ready(s: &mut (impl Stream<Item = ObjectRef<CachedExternalSecret>> + Unpin)) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(es)) = s.next().now_or_never() {
            out.push(es.name);
        }
        out
    }

    #[tokio::test]
    async fn at_most_limit_are_admitted_and_a_start_lets_the_next_in_order() {
        let gate = Arc::new(TriggerGate::new(3));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        for name in ["a", "b", "c", "d", "e"] {
            tx.unbounded_send(es(name)).unwrap();
        }
        assert_eq!(ready(&mut gated), ["a", "b", "c"]);
        assert_eq!(gate.counts(), (2, 3));
        gate.started("ns/b", || unreachable!("no trigger was dropped"));
        assert_eq!(ready(&mut gated), ["d"]);
        gate.released("ns/a");
        gate.released("ns/c");
        assert_eq!(ready(&mut gated), ["e"]);
        assert_eq!(gate.counts(), (0, 2));
    }

    #[tokio::test]
    async fn a_trigger_for_one_waiting_or_admitted_adds_nothing() {
        let gate = Arc::new(TriggerGate::new(1));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        for name in ["a", "b", "a", "b", "b"] {
            tx.unbounded_send(es(name)).unwrap();
        }
        assert_eq!(ready(&mut gated), ["a"]);
        assert_eq!(gate.counts(), (1, 1));
        gate.started("ns/a", || false);
        assert_eq!(ready(&mut gated), ["b"]);
        gate.started("ns/b", || false);
        assert!(ready(&mut gated).is_empty());
    }

    #[tokio::test]
    async fn a_change_dropped_while_admitted_is_queued_again_only_if_the_reconcile_got_an_older_object()
     {
        let gate = Arc::new(TriggerGate::new(4));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        for name in ["a", "b", "c"] {
            tx.unbounded_send(es(name)).unwrap();
        }
        assert_eq!(ready(&mut gated), ["a", "b", "c"]);
        // Triggers for a and b come while they are admitted.
        tx.unbounded_send(es("a")).unwrap();
        tx.unbounded_send(es("b")).unwrap();
        assert!(ready(&mut gated).is_empty());
        // a's reconcile got the cached object: nothing more; b's got an older one: again.
        gate.started("ns/a", || false);
        gate.started("ns/b", || true);
        // c had no trigger since it was admitted: staleness is not even asked.
        gate.started("ns/c", || panic!("asked without a dropped trigger"));
        assert_eq!(ready(&mut gated), ["b"]);
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_a_waiting_stream() {
        let gate = Arc::new(TriggerGate::new(1));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        tx.unbounded_send(es("a")).unwrap();
        tx.unbounded_send(es("b")).unwrap();
        assert_eq!(gated.next().await.unwrap().name, "a");
        let next = tokio::spawn(async move { gated.next().await.map(|es| es.name) });
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        gate.started("ns/a", || false);
        let name = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(name.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn it_ends_when_its_triggers_end_and_nothing_waits() {
        let gate = Arc::new(TriggerGate::new(1));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        tx.unbounded_send(es("a")).unwrap();
        tx.unbounded_send(es("b")).unwrap();
        drop(tx);
        assert_eq!(ready(&mut gated), ["a"]);
        gate.started("ns/a", || false);
        assert_eq!(gated.next().await.map(|es| es.name).as_deref(), Some("b"));
        assert_eq!(gated.next().await, None);
    }
}
