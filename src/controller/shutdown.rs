//! The end of `controller::run`: every part runs until the shutdown signal, then gets
//! [`SHUTDOWN_GRACE`] to finish what it is doing.

use std::{collections::BTreeSet, sync::Mutex, time::Duration};

use futures::future::{self, BoxFuture};

/// How long the controllers get, after the shutdown signal, to finish their running
/// reconciles before `run` returns without them (dropping them: a request already sent is
/// answered, none is sent after), 1.5 s. It bounds a handover: the leader releases its Lease
/// only once `run` has returned, so that two leaders never write at once, and the standby
/// takes it within about 0.25 s of the release (RELIABILITY.md: 20 of 20 Pod deletions within
/// 3 s). A reconcile takes milliseconds; one waiting on a slow backend (a provider read waits
/// at most 5 s) is cut short and redone by the next leader: every write is idempotent, and a
/// Secret write is one request, made or not.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Runs the named `parts` together until all have stopped, or until [`SHUTDOWN_GRACE`] after
/// `shutdown` resolved; then logs a warning naming the parts still running (kube's controller
/// waits for its cache's first list before it stops, forever if the list keeps failing, e.g.
/// when a CRD is missing).
pub async fn join_parts<const N: usize>(
    parts: [(&'static str, BoxFuture<'_, ()>); N],
    shutdown: impl Future<Output = ()>,
) {
    let running: Mutex<BTreeSet<&'static str>> = Mutex::new(parts.iter().map(|p| p.0).collect());
    let all = future::join_all(parts.into_iter().map(|(name, task)| {
        let running = &running;
        async move {
            task.await;
            running.lock().expect("parts lock").remove(name);
            tracing::debug!(part = name, "stopped");
        }
    }));
    let grace = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        _ = all => {}
        _ = grace => tracing::warn!(
            grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
            running = ?running.lock().expect("parts lock"),
            "not stopped this long after the shutdown signal; exiting without them (their reconciles are redone by the next leader)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test(start_paused = true)]
    async fn a_part_that_never_stops_is_left_after_the_grace_period() {
        let started = tokio::time::Instant::now();
        join_parts(
            [
                ("stops", async {}.boxed()),
                ("hangs", future::pending().boxed()),
            ],
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(1) + SHUTDOWN_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn parts_that_stop_end_it_at_once() {
        let started = tokio::time::Instant::now();
        join_parts(
            [("a", async {}.boxed()), ("b", async {}.boxed())],
            future::pending::<()>(),
        )
        .await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
