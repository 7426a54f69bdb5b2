//! The admin HTTP server on one port: `/livez`, `/readyz` (true once every cache has synced and
//! while the API server answers),
//! `/metrics` (Prometheus text format).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use prometheus_client::registry::Registry;

/// Readiness flag shared with the controllers.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `/readyz`: 503 before the caches have synced, while shutting down and while the API
/// server does not answer the watches; otherwise 200, saying how many provider backends are
/// not answering (they do not make the operator unready: ExternalSecrets of other backends
/// still sync).
fn readyz(ready: &Readiness) -> (StatusCode, String) {
    if !ready.get() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready".into());
    }
    if !crate::metrics::kube_api_up() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Kubernetes API server does not answer the watches".into(),
        );
    }
    match crate::metrics::providers_down() {
        0 => (StatusCode::OK, "ready".into()),
        n => (
            StatusCode::OK,
            format!("ready; {n} provider backend(s) not answering (secret_relay_providers_down)"),
        ),
    }
}

#[derive(Clone)]
struct AdminState {
    ready: Readiness,
    registry: Arc<Registry>,
}

/// Serves the admin endpoints on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, ready: Readiness) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    crate::metrics::register(&mut registry);
    let state = AdminState {
        ready,
        registry: Arc::new(registry),
    };
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move { readyz(&s.ready) }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
                    Ok(()) => (StatusCode::OK, out),
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
                }
            }),
        )
        .with_state(state);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 10: `/readyz` said 200 through 53 s without an API server.
    #[test]
    fn readyz_says_when_the_api_server_or_a_backend_does_not_answer() {
        let ready = Readiness::default();
        assert_eq!(readyz(&ready).0, StatusCode::SERVICE_UNAVAILABLE);
        ready.set(true);
        assert_eq!(readyz(&ready), (StatusCode::OK, "ready".to_string()));
        crate::metrics::kube_api_observed(false);
        let (status, body) = readyz(&ready);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("API server does not answer"), "{body}");
        crate::metrics::kube_api_observed(true);
        crate::metrics::provider_down("test", 1);
        let (status, body) = readyz(&ready);
        crate::metrics::provider_down("test", -1);
        assert_eq!(status, StatusCode::OK);
        // (Other tests may have a backend down at the same time: the count is theirs too.)
        assert!(body.starts_with("ready; "), "{body}");
        assert!(
            body.ends_with("provider backend(s) not answering (secret_relay_providers_down)"),
            "{body}"
        );
    }
}
