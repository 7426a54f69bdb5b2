//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager), so that of
//! several replicas only one runs the controllers and writes.
//!
//! A standby waits for the lease; the leader renews it every `duration − grace` seconds. When
//! a leader stops renewing (killed), a standby takes the lease once it has expired, i.e.
//! within `duration` seconds. A leader that loses the lease exits (see `main`), so that it never
//! writes while another replica leads; a leader that shuts down releases the lease at once.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name (`secret-relay`).
    pub name: String,
    /// Namespace of the lease: the operator's own.
    pub namespace: String,
    /// Holder identity, unique per replica (the pod name plus a random suffix).
    pub identity: String,
    /// Lease duration in seconds: how long a standby waits after the last renewal.
    pub duration_secs: u64,
}

/// Held leadership. Drop or [`Leadership::release`] it to give the lease up.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
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
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}

/// Waits until this replica holds the lease. Returns `None` if `shutdown` resolves first.
/// Errors: the Lease cannot be read or created (RBAC: `leases` get/create/patch in
/// `config.namespace`).
pub async fn acquire(
    client: Client,
    config: &LeaseConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let grace = (config.duration_secs / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_field_manager(format!("secret-relay-lease-{}", config.identity))
        .with_duration(config.duration_secs.max(grace + 1))
        .with_grace(grace)
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "waiting for the lease");
    let led = tokio::select! {
        res = state.wait_for(|leader| *leader) => Some(res.is_ok()),
        _ = shutdown => None,
    };
    match led {
        Some(true) => {}
        // The lease task ended before we led: surface its error.
        Some(false) => {
            return match task.await {
                Ok(Err(e)) => Err(e),
                _ => Ok(None),
            };
        }
        None => {
            drop(state);
            let _ = task.await;
            return Ok(None);
        }
    }
    tracing::info!(identity = %config.identity, "acquired the lease; leading");
    Ok(Some(Leadership { state, task }))
}
