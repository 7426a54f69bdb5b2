//! What the controllers did, for in-process observers (the integration tests, the
//! benchmark): every finished ExternalSecret reconcile and every rollout restart, as a
//! broadcast. A test waits for the positive sign that the operator processed an event ("tok
//! refreshed twice and wrote nothing") instead of sleeping and hoping it would have.
//!
//! Nothing is built or sent while nobody subscribes ([`subscribe`]), so the operator pays one
//! atomic load per reconcile. The messages carry names and outcomes, never values.

use std::sync::LazyLock;

use tokio::sync::broadcast;

/// Messages kept for a subscriber that falls behind; an older one is dropped
/// (`RecvError::Lagged`).
const CAPACITY: usize = 4096;

static CHANNEL: LazyLock<broadcast::Sender<Observed>> =
    LazyLock::new(|| broadcast::channel(CAPACITY).0);

/// One thing a controller did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// An ExternalSecret reconcile ended.
    Reconciled {
        namespace: String,
        name: String,
        outcome: Outcome,
    },
    /// A workload's debounced rollout restart was made (or failed: `ok` false), for the
    /// ExternalSecrets named in `asked_by`.
    Restarted {
        namespace: String,
        /// `Kind/name`, e.g. `Deployment/app`.
        workload: String,
        asked_by: Vec<String>,
        ok: bool,
    },
}

/// How an ExternalSecret reconcile ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due (no provider call, no write). `next_refresh_ms`: when the next refresh
    /// is due (Unix ms), if it refreshes on a timer.
    UpToDate { next_refresh_ms: Option<i64> },
    /// The values were fetched and the Secret written or confirmed. `written`: the Secret was
    /// created, updated or deleted; `restarts`: rollout restarts requested;
    /// `next_refresh_ms` as above.
    Synced {
        written: bool,
        restarts: usize,
        next_refresh_ms: Option<i64>,
    },
    /// The sync failed, with the error's category (`NotFound`, `InvalidSpec`, ...).
    Failed { category: &'static str },
    /// Put off without a sync: the caches' first lists, a retry not yet due, a busy backend.
    Deferred,
}

/// A receiver of everything observed from now on.
pub fn subscribe() -> broadcast::Receiver<Observed> {
    CHANNEL.subscribe()
}

/// Sends what `make` builds, only when someone subscribes.
pub(crate) fn publish(make: impl FnOnce() -> Observed) {
    if CHANNEL.receiver_count() > 0 {
        let _ = CHANNEL.send(make());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_built_without_a_subscriber_and_all_is_seen_with_one() {
        publish(|| unreachable!("built without a subscriber"));
        let mut rx = subscribe();
        let seen = Observed::Reconciled {
            namespace: "ns".into(),
            name: "es".into(),
            outcome: Outcome::Deferred,
        };
        publish(|| seen.clone());
        // Other tests' reconciles may publish too.
        while rx.recv().await.unwrap() != seen {}
    }
}
