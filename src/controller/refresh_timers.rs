//! The refresh timers of the ExternalSecrets, kept apart from the runner's requeues.
//!
//! Every synced ExternalSecret waits for its next refresh. Returned as `Action::requeue` to
//! kube's controller (which ran the ExternalSecrets before [`super::runner`]), each wait was an
//! entry of kube's scheduler: the request (an `ObjectRef` and a reason) in a hash
//! map and again in a `DelayQueue` slab, about 0.95 KB per ExternalSecret, 9.5 MB at 10,000
//! (heaptrack). [`RefreshTimers`] keeps one heap entry per wait instead: the instant and
//! `namespace/name` in one string, about 60 bytes. A reconcile sets its timer
//! ([`RefreshTimers::set`]) and asks for no requeue; [`RefreshTimers::fired`] is the stream of
//! ExternalSecrets whose timer is due, one of the triggers (`triggers.rs`). Only refreshes go
//! through here; retries after a failure are the runner's requeues, with its backoff.
//!
//! A timer set again replaces the one before: the older heap entry stays until its instant,
//! and is then dropped because the ExternalSecret's current timer (its `ObjectState`) differs.
//! Setting the same instant again pushes nothing, so an ExternalSecret has at most one entry
//! per distinct instant it was given.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    num::NonZeroI64,
    sync::{Arc, Mutex},
};

use futures::Stream;
use tokio::{sync::Notify, time::Instant};

/// One pending timer: when it fires, the due time it is for (Unix ms), `namespace/name` (the
/// ExternalSecret cache's own key string, shared).
type Timer = (Instant, i64, Arc<str>);

/// Pending refresh timers: a min-heap of [`Timer`]s.
#[derive(Default)]
pub struct RefreshTimers {
    heap: Mutex<BinaryHeap<Reverse<Timer>>>,
    changed: Notify,
}

impl RefreshTimers {
    /// Sets the timer of an ExternalSecret for the refresh due at `due`'s Unix ms, firing at
    /// its instant; `current` is the due time of its current timer (kept in its
    /// `ObjectState`), updated here; `key` gives its `namespace/name`, asked only when a timer
    /// is pushed. `None` cancels it. Setting the due time it already has changes nothing (a
    /// reconcile that finds nothing due sets the same one again).
    pub fn set(
        &self,
        key: impl FnOnce() -> Arc<str>,
        due: Option<(i64, Instant)>,
        current: &mut Option<NonZeroI64>,
    ) {
        let due_ms = due.and_then(|(ms, _)| NonZeroI64::new(ms));
        if *current == due_ms {
            return;
        }
        *current = due_ms;
        let Some((due_ms, at)) = due else { return };
        let mut heap = self.heap.lock().expect("refresh timers lock");
        let earliest = heap.peek().is_none_or(|Reverse((first, ..))| at < *first);
        heap.push(Reverse((at, due_ms, key())));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Number of heap entries, stale ones included (for tests).
    pub fn len(&self) -> usize {
        self.heap.lock().expect("refresh timers lock").len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ExternalSecrets whose timer is due, in order of their instants. `take` is asked for
    /// each due entry (with its due time, Unix ms) whether it is still the ExternalSecret's
    /// current timer (and clears it then): a replaced or cancelled timer, or a deleted ExternalSecret, yields nothing.
    /// Never ends.
    pub fn fired(
        self: Arc<Self>,
        take: impl Fn(&str, i64) -> bool + Send + 'static,
    ) -> impl Stream<Item = Arc<str>> + Send + 'static {
        futures::stream::unfold((self, take), |(timers, take)| async move {
            let this = &*timers;
            loop {
                let next = this
                    .heap
                    .lock()
                    .expect("refresh timers lock")
                    .peek()
                    .map(|Reverse((at, ..))| *at);
                match next {
                    Some(at) if at <= Instant::now() => {
                        let Some(Reverse((_, due_ms, key))) =
                            this.heap.lock().expect("refresh timers lock").pop()
                        else {
                            continue;
                        };
                        if take(&key, due_ms) {
                            return Some((key, (timers, take)));
                        }
                    }
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = this.changed.notified() => {}
                        }
                    }
                    None => this.changed.notified().await,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use futures::StreamExt;

    use super::*;

    type Current = Mutex<HashMap<String, Option<NonZeroI64>>>;

    /// Sets `name`'s timer for `secs` after `start` (its due time: `secs` as ms).
    fn set(
        timers: &RefreshTimers,
        current: &Current,
        name: &str,
        start: Instant,
        secs: Option<u64>,
    ) {
        let mut current = current.lock().unwrap();
        let slot = current.entry(name.to_string()).or_default();
        let due = secs.map(|s| (s as i64 * 1000, start + Duration::from_secs(s)));
        timers.set(|| format!("team/{name}").into(), due, slot);
    }

    fn take(current: &Arc<Current>) -> impl Fn(&str, i64) -> bool + Send + 'static {
        let current = current.clone();
        move |key, due_ms| {
            let name = key.strip_prefix("team/").expect("in namespace team");
            let mut current = current.lock().unwrap();
            match current.get_mut(name) {
                Some(slot) if *slot == NonZeroI64::new(due_ms) => {
                    *slot = None;
                    true
                }
                _ => false,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_order_and_a_replaced_or_cancelled_one_does_not() {
        let timers = Arc::new(RefreshTimers::default());
        let current = Arc::new(Current::default());
        let start = Instant::now();
        set(&timers, &current, "c", start, Some(30));
        set(&timers, &current, "a", start, Some(10));
        set(&timers, &current, "b", start, Some(20));
        set(&timers, &current, "gone", start, Some(5));
        // Moved later: its entry at 15 s stays in the heap but must not fire.
        set(&timers, &current, "moved", start, Some(15));
        set(&timers, &current, "moved", start, Some(40));
        // Set again for the same due time, a moment later: no second entry.
        set(
            &timers,
            &current,
            "a",
            start + Duration::from_millis(3),
            Some(10),
        );
        assert_eq!(timers.len(), 6);
        set(&timers, &current, "gone", start, None);

        let fired = timers.clone().fired(take(&current));
        tokio::pin!(fired);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let es = fired.next().await.unwrap();
            seen.push((es.to_string(), (Instant::now() - start).as_secs()));
        }
        assert_eq!(
            seen,
            [
                ("team/a".to_string(), 10),
                ("team/b".to_string(), 20),
                ("team/c".to_string(), 30),
                ("team/moved".to_string(), 40)
            ]
        );
        assert!(
            timers.is_empty(),
            "stale entries are dropped as they come due"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_timer_set_while_waiting_wakes_the_stream() {
        let timers = Arc::new(RefreshTimers::default());
        let current = Arc::new(Current::default());
        let start = Instant::now();
        set(&timers, &current, "late", start, Some(3600));
        let fired = timers.clone().fired(take(&current));
        tokio::pin!(fired);
        let next = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            set(&timers, &current, "soon", start, Some(2));
            std::future::pending::<()>().await
        };
        let es = tokio::select! {
            es = fired.next() => es.unwrap(),
            _ = next => unreachable!(),
        };
        assert_eq!(&*es, "team/soon");
        assert_eq!((Instant::now() - start).as_secs(), 2);
    }
}
