//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! runs the controllers and writes.
//!
//! kube-lease-manager's state machine decides what to do (lock a free Lease, renew our own,
//! free an expired one); we drive it one step at a time with [`LeaseManager::changed`]. Left
//! alone, a standby that finds the Lease held sleeps until that holder's expiry and only then
//! reads the Lease again, so a Lease given up meanwhile waited for up to `duration` seconds.
//! Here a standby also watches the one Lease: when it is released, or its holder renews it,
//! the standby looks again at once (a fresh manager, as the library keeps what it read until
//! that expires). So:
//! - a leader that shuts down (SIGTERM) releases the Lease, and a standby takes it within a
//!   round trip or two of the API server;
//! - a leader that stops renewing (killed) keeps the Lease until it expires, `duration`
//!   seconds after its last renewal: no standby may take it sooner. The standby wakes at that
//!   expiry, as it has followed each renewal.
//!
//! The leader renews every `duration − grace` seconds, never interrupted by the watch. A
//! leader that loses the Lease exits (see `main`), so that it never writes while another
//! replica leads.

use std::{future::Future, pin::pin, time::Duration};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

/// First wait after a failed step (a read or write of the Lease); doubled up to
/// [`MAX_RETRY`].
const MIN_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failed step.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name (`secret-relay`).
    pub name: String,
    /// Namespace of the lease: the operator's own.
    pub namespace: String,
    /// Holder identity, unique per replica (the pod name plus a random suffix).
    pub identity: String,
    /// Lease duration in seconds: how long a standby waits after the last renewal of a leader
    /// that stopped without releasing the Lease.
    pub duration_secs: u64,
}

/// Held leadership. Drop or [`Leadership::release`] it to give the lease up.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<(), LeaseManagerError>>,
}

impl Leadership {
    /// Resolves when the lease is lost (another holder took it, or the lease task ended).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
    }

    /// Gives the lease up so a standby can take it without waiting for it to expire.
    pub async fn release(self) {
        let Leadership { state, task } = self;
        drop(state);
        match task.await {
            Ok(Ok(())) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}

/// Waits until this replica holds the lease. Returns `None` if `shutdown` resolves first.
/// Errors: the Lease cannot be read or created at the start (RBAC: `leases` create, and
/// get/list/watch/patch on `config.name` in `config.namespace`); later failures are logged
/// and retried every 0.5-5 s.
pub async fn acquire(
    client: Client,
    config: &LeaseConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let mut manager = build(&client, config).await?;
    let mut changes = pin!(lease_changes(&client, config));
    let mut shutdown = pin!(shutdown);
    let mut retry = MIN_RETRY;
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting for the lease");
    loop {
        // A standby's `changed()` only sleeps (until the holder's expiry, or a retry's wait)
        // or makes one attempt to lock; dropping it for a fresh look is harmless.
        let step = tokio::select! {
            res = manager.changed() => Some(res),
            Some(()) = changes.next() => None,
            () = &mut shutdown => return Ok(None),
        };
        match step {
            Some(Ok(true)) => break,
            // A standby's `changed()` reports only a lease acquired.
            Some(Ok(false)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, retry_in = ?retry, "waiting for the lease");
                tokio::select! {
                    () = tokio::time::sleep(retry) => retry = (retry * 2).min(MAX_RETRY),
                    Some(()) = changes.next() => {}
                    () = &mut shutdown => return Ok(None),
                }
            }
            None => tracing::debug!("the lease changed; looking again"),
        }
        // The library keeps the state it read until that expires: a fresh manager reads the
        // Lease again.
        match build(&client, config).await {
            Ok(m) => manager = m,
            Err(e) => tracing::warn!(error = %e, "reading the lease"),
        }
    }
    tracing::info!(identity = %config.identity, "acquired the lease; leading");
    Ok(Some(lead(manager)))
}

/// A manager of the Lease `config` names, which it creates if missing.
async fn build(client: &Client, config: &LeaseConfig) -> Result<LeaseManager, LeaseManagerError> {
    let grace = (config.duration_secs / 3).max(1);
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_field_manager(format!("secret-relay-lease-{}", config.identity))
        .with_duration(config.duration_secs.max(grace + 1))
        .with_grace(grace)
        .build()
        .await
}

/// One item each time the Lease changes while another replica holds it or nobody does
/// (released, renewed, taken, deleted): a watch of that one Lease (a `metadata.name` field
/// selector, which RBAC's `resourceNames` admits). Watch errors are logged and retried
/// within 0.5-5 s.
fn lease_changes(client: &Client, config: &LeaseConfig) -> impl Stream<Item = ()> + use<> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let selector = watcher::Config::default().fields(&format!("metadata.name={}", config.name));
    let identity = config.identity.clone();
    watcher(api, selector)
        .backoff(retry_backoff())
        .touched_objects()
        .filter_map(move |lease| {
            let change = match lease {
                // Our own writes: `changed()` reports them.
                Ok(lease) => {
                    let holder = lease.spec.and_then(|s| s.holder_identity);
                    (holder.as_deref() != Some(identity.as_str())).then_some(())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching the lease");
                    None
                }
            };
            future::ready(change)
        })
}

fn retry_backoff() -> watcher::ExponentialBackoff {
    watcher::ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(MIN_RETRY)
            .with_max_delay(MAX_RETRY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times(),
    )
}

/// Keeps the lease renewed until it is lost (reported as `false`) or the [`Leadership`] is
/// released or dropped (then the lease is given up).
fn lead(manager: LeaseManager) -> Leadership {
    let (tx, state) = watch::channel(true);
    let task = tokio::spawn(async move {
        let mut retry = MIN_RETRY;
        loop {
            let res = tokio::select! {
                biased;
                () = tx.closed() => break,
                res = manager.changed() => res,
            };
            match res {
                Ok(true) => retry = MIN_RETRY,
                Ok(false) => {
                    tx.send_replace(false);
                    return Ok(());
                }
                // As kube-lease-manager's own loop does: retry, still the holder as far as we
                // know, until a read shows another holder.
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "renewing the lease");
                    tokio::select! {
                        () = tx.closed() => break,
                        () = tokio::time::sleep(retry) => retry = (retry * 2).min(MAX_RETRY),
                    }
                }
            }
        }
        manager.release().await
    });
    Leadership { state, task }
}
