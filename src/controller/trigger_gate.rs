//! A bound on the reconcile requests that wait in the runner ([`super::runner`]).
//!
//! When kube's controller ran the ExternalSecrets, every trigger of one (its own watch, its
//! managed Secret's watch, a store change, a refresh timer) became a request in kube's
//! scheduler: a hash-map entry and a
//! `DelayQueue` slot with the `ObjectRef` and a reason, about 0.95 KB each (heaptrack). At a
//! start the first lists trigger every ExternalSecret at once, and kube's runner holds them all
//! until the ExternalSecret cache is ready: 10,000 requests (9.5 MB) at N = 10,000, 95 MB at
//! 100,000, in a hash table that never shrinks again.
//!
//! [`TriggerGate`] takes the triggers instead and lets at most `limit` of them into the runner
//! ([`super::runner`]; admitted, not yet started); the rest wait here, one `namespace/name` string each (about 80
//! bytes with the queue and set entries), in arrival order per namespace, the namespaces taking
//! turns and each holding at most its share of the admitted slots (issue 27: one namespace's
//! flood of due ExternalSecrets no longer delays another's first sync). A trigger for an ExternalSecret already
//! waiting here or admitted adds nothing, as kube's scheduler merges them too. The runner frees
//! a slot when it starts that reconcile, or drops it because its object is gone
//! ([`TriggerGate::started`]).
//!
//! A trigger dropped while its ExternalSecret is admitted is not lost: the runner frees the
//! slot before it reads the object from the cache, and the reconcile reads the Secret and
//! store caches after that, so the reconcile sees whatever that trigger was for.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures::{Stream, StreamExt, task::AtomicWaker};

/// The triggers waiting for a slot and the ones admitted, by `namespace/name`.
#[derive(Default)]
struct Slots {
    /// Waiting keys per namespace, each queue in arrival order.
    waiting: HashMap<Arc<str>, VecDeque<Arc<str>>>,
    /// The namespaces with waiting keys, in turn order (round robin).
    turns: VecDeque<Arc<str>>,
    /// Waiting keys in all.
    waiting_len: usize,
    queued: HashSet<Arc<str>>,
    /// Admitted keys.
    admitted: HashSet<Arc<str>>,
    /// Admitted keys per namespace.
    admitted_in: HashMap<Arc<str>, usize>,
}

/// The namespace part of a `namespace/name` key.
fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

/// Lets at most `limit` ExternalSecret triggers into the runner at a time (module
/// docs), taking the namespaces with waiting triggers in turn, each with at most `share`
/// admitted at once: a namespace with 5,000 due ExternalSecrets delays another namespace's
/// first trigger by one turn, not by its 5,000. Shared by the trigger stream
/// ([`TriggerGate::gate`]) and the reconciles.
pub struct TriggerGate {
    limit: usize,
    share: usize,
    slots: Mutex<Slots>,
    waker: AtomicWaker,
}

impl TriggerGate {
    /// A gate admitting at most `limit` (at least 1) requests not yet started, with no bound
    /// per namespace but its turn.
    pub fn new(limit: usize) -> Self {
        Self::with_share(limit, limit)
    }

    /// A gate admitting at most `limit` requests not yet started, at most `share` (at least 1)
    /// of them from one namespace.
    pub fn with_share(limit: usize, share: usize) -> Self {
        TriggerGate {
            limit: limit.max(1),
            share: share.max(1),
            slots: Mutex::default(),
            waker: AtomicWaker::new(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().expect("trigger gate lock")
    }

    fn push(&self, key: Arc<str>) {
        let mut slots = self.slots();
        if !slots.admitted.contains(&key) && !slots.queued.contains(&key) {
            slots.queued.insert(key.clone());
            slots.waiting_len += 1;
            let namespace: Arc<str> = namespace_of(&key).into();
            match slots.waiting.get_mut(&namespace) {
                Some(queue) => queue.push_back(key),
                None => {
                    slots
                        .waiting
                        .insert(namespace.clone(), VecDeque::from([key]));
                    slots.turns.push_back(namespace);
                }
            }
        }
    }

    /// The next waiting key to admit: from the first namespace in turn that is below its
    /// share, which then goes to the back of the turns if it still has keys waiting.
    fn admit(&self) -> Option<Arc<str>> {
        let mut slots = self.slots();
        if slots.admitted.len() >= self.limit {
            return None;
        }
        for _ in 0..slots.turns.len() {
            let namespace = slots.turns.pop_front()?;
            if slots.admitted_in.get(&namespace).copied().unwrap_or(0) >= self.share {
                slots.turns.push_back(namespace);
                continue;
            }
            let queue = slots.waiting.get_mut(&namespace)?;
            let key = queue.pop_front()?;
            if queue.is_empty() {
                slots.waiting.remove(&namespace);
            } else {
                slots.turns.push_back(namespace.clone());
            }
            slots.waiting_len -= 1;
            slots.queued.remove(&key);
            *slots.admitted_in.entry(namespace).or_default() += 1;
            slots.admitted.insert(key.clone());
            return Some(key);
        }
        None
    }

    /// The runner takes the admitted `namespace/name`: it starts its reconcile, or drops it
    /// because its object is gone. Its slot is free.
    pub fn started(&self, key: &str) {
        let admitted = {
            let mut slots = self.slots();
            let admitted = slots.admitted.remove(key);
            if admitted {
                let namespace = namespace_of(key);
                if let Some(n) = slots.admitted_in.get_mut(namespace) {
                    *n -= 1;
                    if *n == 0 {
                        slots.admitted_in.remove(namespace);
                    }
                }
            }
            admitted
        };
        if admitted {
            self.waker.wake();
        }
    }

    /// A trigger for `namespace/name` from outside the gated stream (the runner's requeue
    /// after a failure or a deferral): queued as any other.
    pub fn trigger(&self, key: Arc<str>) {
        self.push(key);
        self.waker.wake();
    }

    /// (waiting, admitted) counts, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let slots = self.slots();
        (slots.waiting_len, slots.admitted.len())
    }

    /// The gated stream of `triggers`: polls `triggers` as fast as they come (they drive the
    /// caches' watches), and yields each ExternalSecret once a slot is free. Ends when
    /// `triggers` ends and nothing waits.
    pub fn gate(
        self: Arc<Self>,
        triggers: impl Stream<Item = Arc<str>> + Send + 'static,
    ) -> impl Stream<Item = Arc<str>> + Send + 'static {
        Gated {
            gate: self,
            triggers: triggers.boxed(),
            ended: false,
        }
    }
}

struct Gated {
    gate: Arc<TriggerGate>,
    triggers: futures::stream::BoxStream<'static, Arc<str>>,
    ended: bool,
}

impl Stream for Gated {
    type Item = Arc<str>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while !self.ended {
            match self.triggers.poll_next_unpin(cx) {
                Poll::Ready(Some(key)) => self.gate.push(key),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        // Registered before looking, so a slot freed in between wakes this task.
        self.gate.waker.register(cx.waker());
        match self.gate.admit() {
            Some(es) => Poll::Ready(Some(es)),
            None if self.ended && self.gate.slots().waiting_len == 0 => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt, channel::mpsc};

    fn es(name: &str) -> Arc<str> {
        in_ns("ns", name)
    }

    fn in_ns(namespace: &str, name: &str) -> Arc<str> {
        super::super::object_key(namespace, name).into()
    }

    fn name(key: &str) -> String {
        key.split_once('/').unwrap().1.to_string()
    }

    /// Everything the gated stream yields right now, without waiting (names only).
    fn ready(s: &mut (impl Stream<Item = Arc<str>> + Unpin)) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(key)) = s.next().now_or_never() {
            out.push(name(&key));
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
        gate.started("ns/b");
        assert_eq!(ready(&mut gated), ["d"]);
        gate.started("ns/a");
        gate.started("ns/c");
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
        gate.started("ns/a");
        assert_eq!(ready(&mut gated), ["b"]);
        gate.started("ns/b");
        assert!(ready(&mut gated).is_empty());
    }

    #[tokio::test]
    async fn a_trigger_from_outside_the_stream_is_queued_as_any_other() {
        let gate = Arc::new(TriggerGate::new(1));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        tx.unbounded_send(es("a")).unwrap();
        assert_eq!(ready(&mut gated), ["a"]);
        gate.trigger(es("b"));
        gate.trigger(es("a"));
        assert!(ready(&mut gated).is_empty());
        gate.started("ns/a");
        assert_eq!(ready(&mut gated), ["b"]);
        gate.started("ns/b");
        assert!(
            ready(&mut gated).is_empty(),
            "a was admitted when triggered"
        );
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_a_waiting_stream() {
        let gate = Arc::new(TriggerGate::new(1));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        tx.unbounded_send(es("a")).unwrap();
        tx.unbounded_send(es("b")).unwrap();
        assert_eq!(&*gated.next().await.unwrap(), "ns/a");
        let next = tokio::spawn(async move { gated.next().await.map(|key| name(&key)) });
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        gate.started("ns/a");
        let name = tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(name.as_deref(), Some("b"));
    }

    /// issue 27: a flood of due ExternalSecrets in one namespace delays another namespace's
    /// trigger by one turn, and holds at most its share of the admitted slots.
    #[tokio::test]
    async fn namespaces_take_turns_each_within_its_share() {
        let gate = Arc::new(TriggerGate::with_share(8, 2));
        let (tx, rx) = mpsc::unbounded();
        let mut gated = gate.clone().gate(rx);
        for i in 0..5000 {
            tx.unbounded_send(in_ns("flood", &format!("f{i}"))).unwrap();
        }
        tx.unbounded_send(in_ns("quiet", "canary")).unwrap();
        // The flood fills its share; the quiet namespace's trigger is admitted next.
        let first: Vec<String> = ready(&mut gated);
        assert_eq!(first, ["f0", "canary", "f1"]);
        assert_eq!(gate.counts(), (4998, 3));
        // As the flood's reconciles start, it takes its turns again, two at a time.
        gate.started("flood/f0");
        gate.started("flood/f1");
        assert_eq!(ready(&mut gated), ["f2", "f3"]);
        // A new quiet trigger waits behind at most the flood's next turn.
        tx.unbounded_send(in_ns("quiet", "second")).unwrap();
        gate.started("quiet/canary");
        gate.started("flood/f2");
        assert_eq!(ready(&mut gated), ["f4", "second"]);
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
        gate.started("ns/a");
        assert_eq!(gated.next().await.as_deref(), Some("ns/b"));
        assert_eq!(gated.next().await, None);
    }
}
